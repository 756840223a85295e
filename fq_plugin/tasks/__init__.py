"""fairseq tasks of the plugin (fairseq imports every module of a user dir's ``tasks/``)."""
