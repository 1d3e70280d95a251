//! One fault per configuration, as a third-party author might ship it: plain wit-bindgen
//! and `std`, no SDK. `{"fault": F}` in its manifest's `[config]` picks F:
//! `print` (a few lines to stdout and stderr, then allow), `chatty` (thousands of lines,
//! then allow), `panic`, `abort`, `stack` (unbounded recursion), `alloc` (one allocation
//! far over the memory cap: std prints to stderr, then aborts), `exit` (`std::process::exit`).

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

use hestia::plugin::host::config;

struct Faults;

fn recurse(depth: u64, trail: &mut [u64; 64]) -> u64 {
    trail[(depth % 64) as usize] = depth;
    std::hint::black_box(recurse(depth + 1, trail)) + std::hint::black_box(trail[0])
}

/// Does what the configuration names; returns when the fault lets it.
fn misbehave() {
    let config = config();
    let fault = config
        .split("\"fault\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("none");
    match fault {
        "print" => {
            println!("checking a request");
            eprintln!("a warning from the plugin");
            print!("a line without its end");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        "chatty" => {
            for i in 0..5_000 {
                println!("line {i} of a plugin that talks too much");
            }
        }
        "panic" => panic!("the plugin gave up"),
        "abort" => std::process::abort(),
        "stack" => {
            let mut trail = [0u64; 64];
            recurse(0, &mut trail);
        }
        "alloc" => {
            let big: Vec<u8> = vec![7; 1 << 30];
            std::hint::black_box(&big);
        }
        "exit" => std::process::exit(3),
        _ => {}
    }
}

impl Guest for Faults {
    fn grant(request: TokenRequest) -> Grant {
        misbehave();
        Grant {
            granted: request.requested,
            refused: Vec::new(),
        }
    }

    fn authorize(_request: FhirRequest, _claims: Claims) -> Decision {
        misbehave();
        Decision::Allow
    }
}

export!(Faults);
