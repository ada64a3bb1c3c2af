"""Credit rating: features from the platform, an expert scorecard, a logistic-regression scorecard
with monitoring, a credit matrix of vendors' scores, and ratings that move a facility's terms."""
