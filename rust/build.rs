//! Generates the Rust types of `proto/button_sidecar/v1/*.proto` (the typed mParticle batch).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["button_sidecar/v1/batch.proto", "button_sidecar/v1/sidecar.proto"];
    for file in files {
        println!("cargo:rerun-if-changed=proto/{file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        // Ordered maps keep the output deterministic (attributes come out sorted by key).
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
