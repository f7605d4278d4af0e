//! Generates the admin API's gRPC code from `proto/tarn/v1/admin.proto` (at the workspace root), with a protoc
//! binary that comes from a crate, so building Tarn needs no system install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["../../proto/tarn/v1/admin.proto"],
        &["../../proto"],
    )?;
    Ok(())
}
