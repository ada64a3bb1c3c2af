"""The shared record every party can verify: an append-only Merkle log (RFC 9162) of the events that
move money or collateral, with signed tree heads, inclusion and consistency proofs, and T+0
reconciliation against the bank's statements."""
