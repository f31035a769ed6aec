"""Homework mode: the user's own homework tree (its commands, bundle, grader, loader) where ranksweep would use its
own. Entered through `study.HomeworkBuilder` (a sweep.builder.PairBuilder) and `check.FirstAdapterCheck`, which the
CLI picks; the trial runner never imports this package."""
