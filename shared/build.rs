// sqlx::migrate! embeds ../migrations at compile time; without this line a new
// migration file would not trigger a rebuild and would be silently missing.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
