//! `cells-toolbox`: the VP's Android tools (screencap, input, wm,
//! getevent, dumpsys, settings, svc, pm, am, monkey, reboot), one program
//! called by each tool's name. See `cells_templates::toolbox`.

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    std::process::exit(cells_templates::toolbox::main(&argv0, args));
}
