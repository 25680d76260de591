"""The lab's view: the certification matrix (`sevimg matrix`) built from results and issues.

:mod:`.records` turns serve's saved reports and GitHub's certificate issues
into :class:`~.records.Record` values, :mod:`.model` builds the matrix
(pure), :mod:`.markdown` and :mod:`.page` write it, :mod:`.markers`
rewrites the marked part of a hand-written document. The processor
generations' names are data (processors.yaml).
"""
