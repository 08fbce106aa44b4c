//! `dtree`: the scripts' device-tree tool (see the library, `dtree`).
//!
//!     dtree ram-base DTB
//!         prints the base of RAM in hex, as Portcullis reads the tree
//!     dtree get DTB NODE PROPERTY
//!         prints a property (strings one per line, else cells in hex)
//!     dtree set-chosen DTB [--kernel ADDR SIZE] [--initrd START END] [--bootargs TEXT]
//!                          [--hyp-args TEXT]
//!         sets Portcullis' and the host's boot properties in /chosen, in place
//!
//! Numbers are decimal or 0x-prefixed hex.

use std::process::ExitCode;

use dtree::ChosenEdit;

fn number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("not a number: {text:?}"))
}

fn run(args: &[String]) -> Result<Option<String>, String> {
    let read = |path: &String| std::fs::read(path).map_err(|e| format!("{path}: {e}"));
    match args {
        [cmd, dtb] if cmd == "ram-base" => {
            Ok(Some(format!("{:#x}", dtree::ram_base(&read(dtb)?)?)))
        }
        [cmd, dtb, node, prop] if cmd == "get" => dtree::get(&read(dtb)?, node, prop).map(Some),
        [cmd, dtb, rest @ ..] if cmd == "set-chosen" => {
            let mut edit = ChosenEdit::default();
            let mut rest = rest;
            while let Some((flag, tail)) = rest.split_first() {
                rest = match (flag.as_str(), tail) {
                    ("--kernel", [a, s, tail @ ..]) => {
                        edit.kernel = Some((number(a)?, number(s)?));
                        tail
                    }
                    ("--initrd", [a, e, tail @ ..]) => {
                        edit.initrd = Some((number(a)?, number(e)?));
                        tail
                    }
                    ("--bootargs", [t, tail @ ..]) => {
                        edit.bootargs = Some(t.clone());
                        tail
                    }
                    ("--hyp-args", [t, tail @ ..]) => {
                        edit.hyp_args = Some(t.clone());
                        tail
                    }
                    _ => return Err(format!("bad set-chosen argument {flag:?}")),
                };
            }
            let out = dtree::set_chosen(&read(dtb)?, &edit)?;
            std::fs::write(dtb, out).map_err(|e| format!("{dtb}: {e}"))?;
            Ok(None)
        }
        _ => Err(String::from(
            "usage: dtree ram-base DTB | get DTB NODE PROPERTY | \
             set-chosen DTB [--kernel ADDR SIZE] [--initrd START END] [--bootargs TEXT] [--hyp-args TEXT]",
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dtree: {e}");
            ExitCode::FAILURE
        }
    }
}
