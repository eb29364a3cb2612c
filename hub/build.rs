//! Rebuilds the hub when a web asset is added: rust-embed reads the asset
//! folders at compile time, and cargo only watches files it was told about.

fn main() {
    for dir in [
        "../client-sdk/js/src",
        "../client-sdk/widget/src",
        "../client-sdk/widget/demo",
    ] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
