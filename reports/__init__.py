"""Frontier tables and plots read from a study's storage; nothing here trains.

`sweep.frontier` computes (trials, graded adapters, every SFT×RFT pair, the frontier, the recommended
pair); `reports.tables`, `reports.plots` and `reports.html` are views of its DataFrames; `reports.build`
assembles and writes the files of `ranksweep report`.
"""
