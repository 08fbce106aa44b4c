//! A small bare-metal EL1 runtime for Portcullis' guest tests.
#![cfg_attr(target_os = "none", no_std)]
