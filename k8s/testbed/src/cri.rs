//! A CRI (v1) client over containerd's unix socket: k8s-cri's generated
//! tonic client (the crate kubelet-like Rust tools use; it needs Debian's
//! protobuf-compiler to build).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// The CRI runtime client.
pub type Runtime = RuntimeServiceClient<Channel>;

/// Connects to the CRI at the unix socket `socket` (reconnects lazily, so
/// it survives a containerd restart).
pub async fn connect(socket: &Path) -> Result<Runtime> {
    let socket: PathBuf = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:0")
        .context("endpoint")?
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }));
    Ok(RuntimeServiceClient::new(channel))
}
