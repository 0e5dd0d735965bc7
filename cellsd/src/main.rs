fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__monitor") => std::process::exit(cellsd::monitor::main()),
        Some("__exec") => std::process::exit(cellsd::execer::main(args.get(2).map(String::as_str).unwrap_or(""))),
        _ => {}
    }
}
