//! The Portcullis image: the thin, architecture-specific layer over the portable core.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("portcullis is a bare-metal image: build it with --target aarch64-unknown-none");
}
