//! `tribune-loadtest`: see the crate documentation.

fn main() {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        if let Err(e) = tribune_loadtest::worker::main() {
            eprintln!("worker: {e:#}");
            std::process::exit(1);
        }
        return;
    }
}
