"""What is predicted and how runs are split: gene selection, regression targets, folds, gene texts."""
