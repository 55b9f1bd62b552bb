//! Compiles the contract with protox (pure Rust, no `protoc` needed), generates the
//! tonic/prost code, and writes the encoded descriptor set that the gateway and the
//! reflection services embed. The encoded bytes come straight from protox because
//! converting through `prost_types` would drop extension options such as
//! `google.api.http`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "agora/options/v1/options.proto",
    "agora/user/v1/user.proto",
    "agora/auth/v1/auth.proto",
    "agora/post/v1/post.proto",
    "agora/notification/v1/notification.proto",
    "agora/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.join("agora").display());
    println!("cargo:rerun-if-changed={}", root.join("google").display());

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(
        out.join("agora_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let mut config = tonic_prost_build::Config::new();
    // `prost::Name` lets event payloads travel as `google.protobuf.Any`.
    config.enable_type_names();
    tonic_prost_build::configure()
        // A server that leaves an RPC out answers UNIMPLEMENTED (ADR 5).
        .generate_default_stubs(true)
        .compile_fds_with_config(compiler.file_descriptor_set(), config)?;
    Ok(())
}
