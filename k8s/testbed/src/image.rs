//! Test images built here from Debian's busybox-static, as one-layer OCI
//! archives that `ctr images import` takes (no registry can be reached).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The sandbox ("pause") image every test containerd is configured with.
pub const PAUSE_IMAGE: &str = "weave.test/pause:1";

/// Where busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tar(dir: &Path, out: &Path) -> Result<()> {
    let status = std::process::Command::new("tar")
        .args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--mtime=@0",
            "--sort=name",
            "-C",
        ])
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("tar of {} failed ({status})", dir.display());
    }
    Ok(())
}

/// Builds `name` (e.g. `weave.test/pause:1`) under `work`: one layer with
/// busybox as `/bin/busybox` and `/bin/sh`, run as `entrypoint`. Returns
/// the path of the OCI archive.
pub fn build_busybox_image(work: &Path, name: &str, entrypoint: &[&str]) -> Result<PathBuf> {
    if !Path::new(BUSYBOX).exists() {
        bail!("{BUSYBOX} is missing: install busybox-static (cargo xtask setup)");
    }
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let root = work.join(format!("{slug}-rootfs"));
    let oci = work.join(format!("{slug}-oci"));
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&oci);
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("tmp"))?;
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).context("copying busybox")?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    let blobs = oci.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let layer_path = work.join(format!("{slug}-layer.tar"));
    tar(&root, &layer_path)?;
    let layer = std::fs::read(&layer_path)?;
    let layer_digest = sha256_hex(&layer);
    std::fs::write(blobs.join(&layer_digest), &layer)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    })
    .to_string();
    let config_digest = sha256_hex(config.as_bytes());
    std::fs::write(blobs.join(&config_digest), &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    })
    .to_string();
    let manifest_digest = sha256_hex(manifest.as_bytes());
    std::fs::write(blobs.join(&manifest_digest), &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(oci.join("index.json"), index.to_string())?;
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let archive = work.join(format!("{slug}.oci.tar"));
    tar(&oci, &archive)?;
    Ok(archive)
}

/// Builds the pause image: busybox sleeping until killed.
pub fn build_pause_image(work: &Path) -> Result<PathBuf> {
    build_busybox_image(work, PAUSE_IMAGE, &["/bin/busybox", "sleep", "2147483647"])
}
