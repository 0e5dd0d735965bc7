//! `getprop` and `setprop` of a VP (one program; the name it is called by
//! picks the tool). Semantics and storage: `cells_templates::props`.
//!
//! ```text
//! getprop                  all properties as "[name]: [value]"
//! getprop NAME [DEFAULT]   one value (DEFAULT, or an empty line, if unset)
//! setprop NAME VALUE
//! ```

use cells_templates::props::PropStore;

fn usage(tool: &str) -> i32 {
    match tool {
        "setprop" => eprintln!("usage: setprop NAME VALUE"),
        _ => eprintln!("usage: getprop [NAME [DEFAULT]]"),
    }
    2
}

fn run() -> i32 {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.remove(0);
    let mut tool = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `cells-prop getprop ...` works too (tests, and a missing link).
    if tool != "getprop" && tool != "setprop" {
        if args.is_empty() {
            return usage("getprop");
        }
        tool = args.remove(0);
    }
    let store = PropStore::default();
    match (tool.as_str(), args.as_slice()) {
        ("getprop", []) => {
            for (k, v) in store.all() {
                println!("[{k}]: [{v}]");
            }
            0
        }
        ("getprop", [name]) | ("getprop", [name, _]) => {
            let v = store
                .get(name)
                .or_else(|| args.get(1).cloned())
                .unwrap_or_default();
            println!("{v}");
            0
        }
        ("setprop", [name, value]) => match store.set(name, value) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("setprop: failed to set property '{name}' to '{value}': {e}");
                1
            }
        },
        (t, _) => usage(t),
    }
}

fn main() {
    std::process::exit(run());
}
