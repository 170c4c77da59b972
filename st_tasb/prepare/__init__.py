"""Everything made before training: candidates, pseudo-queries, teacher scores, the score table, query clusters."""
