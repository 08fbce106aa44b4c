//! Boot-time decisions: the host's command line, where Portcullis and the crash region live, and the
//! device tree the host is given.
