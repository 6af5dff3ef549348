"""The report model (JSON is the source of truth) and what is derived from it: JUnit
XML and the HTML page."""
