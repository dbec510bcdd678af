//! The engine's [`Io`] over Envoy: header maps, buffers, counters, the log and the peer address.
//! One type for the streams and the root context; the root has no stream, so its header edits
//! fail and it reads only the answer of a call.

use super::vm::{log, Shared};
use crate::engine::exchange::{Body, Edit, HostError, Io, Level, Metric};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

pub(super) struct HostIo<'a> {
    shared: &'a Shared,
    /// An HTTP stream's context (its header maps and bodies exist), not the root's.
    stream: bool,
}

impl<'a> HostIo<'a> {
    pub(super) fn stream(shared: &'a Shared) -> HostIo<'a> {
        HostIo {
            shared,
            stream: true,
        }
    }

    pub(super) fn root(shared: &'a Shared) -> HostIo<'a> {
        HostIo {
            shared,
            stream: false,
        }
    }
}

impl Io for HostIo<'_> {
    fn request_header(&mut self, edit: Edit<'_>) -> Result<(), HostError> {
        if !self.stream {
            return Err(HostError);
        }
        edit_map(MapType::HttpRequestHeaders, edit)
    }

    fn response_header(&mut self, edit: Edit<'_>) {
        if self.stream {
            let _ = edit_map(MapType::HttpResponseHeaders, edit);
        }
    }

    fn body(&mut self, which: Body, size: usize) -> Option<Vec<u8>> {
        // The root reads only the answers of its HTTP calls; a stream everything else.
        if self.stream == (which == Body::CallResponse) {
            return None;
        }
        if size == 0 {
            return Some(Vec::new());
        }
        super::probe::host_call();
        let body = hostcalls::get_buffer(buffer_of(which), 0, size).ok()??;
        (body.len() == size).then_some(body)
    }

    fn count(&mut self, metric: Metric<'_>) {
        self.shared.metrics.count(metric);
    }

    fn log(&mut self, level: Level, message: &str) {
        log(level, message);
    }

    fn peer(&mut self) -> Option<String> {
        self.stream.then(peer_address).flatten()
    }

    fn store(&self) -> Option<&dyn crate::store::SharedStore> {
        Some(&super::store::HostStore)
    }
}

fn buffer_of(which: Body) -> BufferType {
    match which {
        Body::Request => BufferType::HttpRequestBody,
        Body::Response => BufferType::HttpResponseBody,
        Body::CallResponse => BufferType::HttpCallResponseBody,
        Body::GrpcResponse => BufferType::GrpcReceiveBuffer,
    }
}

fn edit_map(map: MapType, edit: Edit<'_>) -> Result<(), HostError> {
    super::probe::host_call();
    match edit {
        Edit::Set(name, value) => hostcalls::set_map_value(map, name, Some(value)),
        Edit::Add(name, value) => hostcalls::add_map_value(map, name, value),
        Edit::Remove(name) => hostcalls::remove_map_value(map, name),
    }
    .map_err(|_| HostError)
}

/// One `connection.*` attribute as text; absent, or not UTF-8, is `None`.
fn connection_property(name: &str) -> Option<String> {
    super::probe::host_call();
    hostcalls::get_property(vec!["connection", name])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

/// What Envoy reports about the downstream connection: the TLS version (absent on plaintext),
/// then, only if it is TLS, whether a client certificate was presented (`connection.mtls`, a
/// one-byte boolean) and, only then, its identities. One to five host calls.
pub(super) fn connection() -> crate::engine::Connection {
    let mut conn = crate::engine::Connection {
        tls_version: connection_property("tls_version").filter(|v| !v.is_empty()),
        ..Default::default()
    };
    if conn.tls_version.is_none() {
        return conn;
    }
    super::probe::host_call();
    conn.peer_certificate = matches!(
        hostcalls::get_property(vec!["connection", "mtls"]),
        Ok(Some(b)) if b.first() == Some(&1)
    );
    if conn.peer_certificate {
        conn.uri_san = connection_property("uri_san_peer_certificate");
        conn.dns_san = connection_property("dns_san_peer_certificate");
        conn.subject = connection_property("subject_peer_certificate");
    }
    conn
}

/// The downstream peer, `ip:port`.
pub(super) fn peer_address() -> Option<String> {
    super::probe::host_call();
    hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_map_to_their_own_buffers() {
        let pairs = [
            (Body::Request, BufferType::HttpRequestBody),
            (Body::Response, BufferType::HttpResponseBody),
            (Body::CallResponse, BufferType::HttpCallResponseBody),
            (Body::GrpcResponse, BufferType::GrpcReceiveBuffer),
        ];
        for (ours, envoys) in pairs {
            assert_eq!(buffer_of(ours) as u32, envoys as u32, "{ours:?}");
        }
    }
}
