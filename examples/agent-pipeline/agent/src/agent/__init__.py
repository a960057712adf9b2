"""A small planning agent: turns a goal into ordered steps, served over HTTP."""
