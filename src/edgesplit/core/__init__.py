"""The pure core: splitting models, the zoo, profiles, predictors, cost, policies, planning and
re-scheduling. Prediction, cost, policy and planning take numbers and return records, no I/O."""
