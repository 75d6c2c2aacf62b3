"""The HTML report and the READMEs' generated numbers: what they read, the findings, sections, samples, figures."""
