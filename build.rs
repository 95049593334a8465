//! The web UI and the down migrations are embedded with include_dir, which on
//! stable Rust cannot tell cargo to watch them; this makes an edit there
//! rebuild the binary.
fn main() {
    println!("cargo:rerun-if-changed=static");
    println!("cargo:rerun-if-changed=migrations_sqlite");
}
