"""Reporting: plots, the HTML run and grid reports, paired statistics and the results document."""
