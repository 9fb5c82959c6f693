//! Prometheus remote write (protocol 1.0): the run's series pushed every
//! interval as a snappy-compressed protobuf `WriteRequest`, so a run lands
//! beside the server's own metrics without anyone scraping a short-lived
//! process. Plain `http://` receivers, or `https://` verified against the
//! Mozilla roots.

use std::time::Duration;

use super::metrics::Family;

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// The request body for `families` at `timestamp_ms`: labels sorted by
/// name, `__name__` among them, as the protocol requires.
pub fn body(families: &[Family], timestamp_ms: i64) -> Vec<u8> {
    let timeseries = families
        .iter()
        .flat_map(|f| &f.samples)
        .map(|s| {
            let mut labels: Vec<Label> = s
                .labels
                .iter()
                .map(|(k, v)| Label {
                    name: (*k).to_string(),
                    value: v.clone(),
                })
                .collect();
            labels.push(Label {
                name: "__name__".into(),
                value: s.name.clone(),
            });
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            TimeSeries {
                labels,
                samples: vec![Sample {
                    value: s.value,
                    timestamp: timestamp_ms,
                }],
            }
        })
        .collect();
    let raw = prost::Message::encode_to_vec(&WriteRequest { timeseries });
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// Where to push: the receiver's URL, checked once.
#[derive(Debug, Clone)]
pub struct Target {
    uri: http::Uri,
    https: bool,
    host: String,
    port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("--prometheus-remote-write {url}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "--prometheus-remote-write {url}: expected an http:// or https:// URL"
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("--prometheus-remote-write {url}: no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Target {
            uri,
            https,
            host,
            port,
        })
    }

    /// Pushes one body; an error says why (the run goes on regardless).
    pub async fn push(&self, body: Vec<u8>) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(5), self.send(body))
            .await
            .map_err(|_| "no answer within 5 s".to_string())?
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let request = http::Request::post(self.uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                http::header::HOST,
                self.uri.authority().map_or("", |a| a.as_str()),
            )
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(http::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header(
                http::header::USER_AGENT,
                concat!("loadfleet/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Full::new(bytes_of(body)))
            .map_err(|e| e.to_string())?;
        let status = if self.https {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", self.host))?;
            exchange(tls, request).await?
        } else {
            exchange(tcp, request).await?
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

fn bytes_of(v: Vec<u8>) -> hyper::body::Bytes {
    hyper::body::Bytes::from(v)
}

async fn exchange<S>(
    io: S,
    request: http::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> Result<http::StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let response = send.send_request(request).await.map_err(|e| e.to_string());
    driver.abort();
    Ok(response?.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_snappy_protobuf_with_sorted_labels() {
        let fam = Family {
            name: "loadfleet_requests_total",
            help: "",
            kind: super::super::metrics::Kind::Counter,
            samples: vec![super::super::metrics::Sample {
                name: "loadfleet_requests_total".into(),
                labels: vec![("step", "home".into()), ("run_id", "r1".into())],
                value: 42.0,
            }],
        };
        let b = body(&[fam], 1_700_000_000_000);
        let raw = snap::raw::Decoder::new().decompress_vec(&b).unwrap();
        let w: WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
        let names: Vec<&str> = w.timeseries[0]
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["__name__", "run_id", "step"]);
        assert_eq!(w.timeseries[0].samples[0].value, 42.0);
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("http://127.0.0.1:9090/api/v1/write").is_ok());
    }
}
