"""The lesson: the forward and reverse processes, what early/middle/late steps decide (phases), inversion, the
verdicts on the lessons claims and the demo report."""
