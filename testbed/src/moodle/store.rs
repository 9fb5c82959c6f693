//! The site's application cache: real stores, used the way Moodle's cache
//! API uses its stores (get, set, delete of small values by key).
//!
//! - `memory`: a map in the site's process (Moodle's static acceleration).
//! - `file:DIR`: one file per key under DIR, read under a shared lock and
//!   replaced under an exclusive one (write to a temporary file, rename), as
//!   Moodle's file store does on shared storage. DIR can be a network mount.
//! - `redis://HOST:PORT`: a real Redis server, over RESP, with a small pool
//!   of connections.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Which store the site's cache is kept in.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSpec {
    Memory,
    File(PathBuf),
    /// `HOST:PORT` of a Redis server.
    Redis(String),
}

impl StoreSpec {
    /// Parses `memory`, `file:DIR` or `redis://HOST:PORT`.
    pub fn parse(s: &str) -> Result<StoreSpec, String> {
        if s == "memory" {
            Ok(StoreSpec::Memory)
        } else if let Some(dir) = s.strip_prefix("file:") {
            if dir.is_empty() {
                return Err("file: needs a directory, as in file:/tmp/cache".into());
            }
            Ok(StoreSpec::File(PathBuf::from(dir)))
        } else if let Some(addr) = s.strip_prefix("redis://") {
            let addr = addr.trim_end_matches('/');
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(StoreSpec::Redis(addr.to_string()))
                }
                _ => Err(format!("expected redis://HOST:PORT, got `{s}`")),
            }
        } else {
            Err(format!(
                "expected memory, file:DIR or redis://HOST:PORT, got `{s}`"
            ))
        }
    }

    /// The store's name as the footer prints it.
    pub fn name(&self) -> &'static str {
        match self {
            StoreSpec::Memory => "memory",
            StoreSpec::File(_) => "file",
            StoreSpec::Redis(_) => "redis",
        }
    }
}

/// A failed cache operation: the page fails with 500 and says why.
#[derive(Debug, thiserror::Error)]
#[error("{store} cache store: {message}")]
pub struct StoreError {
    store: &'static str,
    message: String,
}

/// An open store.
#[derive(Debug)]
pub enum Store {
    Memory(Mutex<HashMap<String, String>>),
    File(PathBuf),
    Redis(RedisPool),
}

/// Prefix of every key the site writes to a shared store.
pub const KEY_PREFIX: &str = "loadfleet-testbed:";

impl Store {
    /// Opens the store: creates the directory, or checks that Redis answers.
    pub async fn open(spec: &StoreSpec) -> Result<Store, StoreError> {
        let store = match spec {
            StoreSpec::Memory => Store::Memory(Mutex::default()),
            StoreSpec::File(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| StoreError {
                    store: "file",
                    message: format!("cannot create {}: {e}", dir.display()),
                })?;
                Store::File(dir.clone())
            }
            StoreSpec::Redis(addr) => {
                let pool = RedisPool {
                    addr: addr.clone(),
                    idle: Mutex::default(),
                };
                pool.command(&[b"PING"]).await?;
                Store::Redis(pool)
            }
        };
        Ok(store)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::File(_) => "file",
            Store::Redis(_) => "redis",
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(key)
                .cloned()),
            Store::File(dir) => {
                let path = file_for(dir, key);
                blocking(move || file_get(&path)).await
            }
            Store::Redis(pool) => {
                let k = format!("{KEY_PREFIX}{key}");
                match pool.command(&[b"GET", k.as_bytes()]).await? {
                    Reply::Bulk(Some(v)) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
                    Reply::Bulk(None) => Ok(None),
                    other => Err(pool.unexpected("GET", &other)),
                }
            }
        }
    }

    pub async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.to_string(), value.to_string());
                Ok(())
            }
            Store::File(dir) => {
                let path = file_for(dir, key);
                let value = value.to_string();
                blocking(move || file_set(&path, &value)).await
            }
            Store::Redis(pool) => {
                let k = format!("{KEY_PREFIX}{key}");
                match pool
                    .command(&[b"SET", k.as_bytes(), value.as_bytes()])
                    .await?
                {
                    Reply::Simple(_) => Ok(()),
                    other => Err(pool.unexpected("SET", &other)),
                }
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
                Ok(())
            }
            Store::File(dir) => {
                let path = file_for(dir, key);
                blocking(move || match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(file_err(&path, e)),
                    _ => Ok(()),
                })
                .await
            }
            Store::Redis(pool) => {
                let k = format!("{KEY_PREFIX}{key}");
                match pool.command(&[b"DEL", k.as_bytes()]).await? {
                    Reply::Int(_) => Ok(()),
                    other => Err(pool.unexpected("DEL", &other)),
                }
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError {
            store: "file",
            message: format!("file operation did not finish: {e}"),
        })?
}

/// A key's file: keys hold `/`, which the file name spells `%`.
fn file_for(dir: &Path, key: &str) -> PathBuf {
    dir.join(key.replace('/', "%"))
}

fn file_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError {
        store: "file",
        message: format!("{}: {e}", path.display()),
    }
}

fn file_get(path: &Path) -> Result<Option<String>, StoreError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_err(path, e)),
    };
    f.lock_shared().map_err(|e| file_err(path, e))?;
    let mut s = String::new();
    f.read_to_string(&mut s).map_err(|e| file_err(path, e))?;
    Ok(Some(s))
}

/// Writes the value beside the key's file and renames it over the file,
/// holding the key's lock file exclusively, so a reader sees the old value
/// or the new one, never half of one.
fn file_set(path: &Path, value: &str) -> Result<(), StoreError> {
    let mut lock_name = path.as_os_str().to_owned();
    lock_name.push(".lock");
    let lock = File::create(&lock_name).map_err(|e| file_err(path, e))?;
    lock.lock().map_err(|e| file_err(path, e))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut f = File::create(&tmp).map_err(|e| file_err(&tmp, e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| file_err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
}

/// Connections to one Redis server, kept open between pages.
#[derive(Debug)]
pub struct RedisPool {
    addr: String,
    idle: Mutex<Vec<BufReader<TcpStream>>>,
}

/// A RESP reply.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl RedisPool {
    fn err(&self, message: String) -> StoreError {
        StoreError {
            store: "redis",
            message: format!("{}: {message}", self.addr),
        }
    }

    fn unexpected(&self, command: &str, reply: &Reply) -> StoreError {
        self.err(format!("unexpected reply to {command}: {reply:?}"))
    }

    /// Sends one command and reads its reply, on an idle connection or a
    /// new one; a connection that failed is not put back.
    pub async fn command(&self, args: &[&[u8]]) -> Result<Reply, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => BufReader::new(
                TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| self.err(format!("cannot connect: {e}")))?,
            ),
        };
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        conn.get_mut()
            .write_all(&out)
            .await
            .map_err(|e| self.err(format!("write: {e}")))?;
        let reply = read_reply(&mut conn)
            .await
            .map_err(|e| self.err(format!("read: {e}")))?;
        if let Reply::Error(e) = &reply {
            return Err(self.err(e.clone()));
        }
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        Ok(reply)
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one RESP2 reply.
async fn read_reply(conn: &mut BufReader<TcpStream>) -> std::io::Result<Reply> {
    // Arrays nest; read them with an explicit stack rather than recursion
    // in an async fn.
    let mut stack: Vec<(usize, Vec<Reply>)> = Vec::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at_checked(1).ok_or_else(|| bad("empty line"))?;
        let mut reply = match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad("bad integer"))?),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| bad("bad length"))?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let n = usize::try_from(n).map_err(|_| bad("bad length"))?;
                    if n > 64 << 20 {
                        return Err(bad("value over 64 MiB"));
                    }
                    let mut v = vec![0; n + 2];
                    conn.read_exact(&mut v).await?;
                    v.truncate(n);
                    Reply::Bulk(Some(v))
                }
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| bad("bad length"))?;
                if n <= 0 {
                    Reply::Array(Vec::new())
                } else {
                    let n = usize::try_from(n).map_err(|_| bad("bad length"))?;
                    stack.push((n, Vec::with_capacity(n.min(1024))));
                    continue;
                }
            }
            _ => return Err(bad("unknown reply type")),
        };
        loop {
            match stack.last_mut() {
                None => return Ok(reply),
                Some((n, items)) => {
                    items.push(reply);
                    if items.len() < *n {
                        break;
                    }
                    let (_, items) = stack.pop().expect("just looked");
                    reply = Reply::Array(items);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_say_what_was_expected() {
        assert_eq!(StoreSpec::parse("memory"), Ok(StoreSpec::Memory));
        assert_eq!(
            StoreSpec::parse("file:/tmp/c"),
            Ok(StoreSpec::File("/tmp/c".into()))
        );
        assert_eq!(
            StoreSpec::parse("redis://127.0.0.1:6379"),
            Ok(StoreSpec::Redis("127.0.0.1:6379".into()))
        );
        let e = StoreSpec::parse("redis://nohost").unwrap_err();
        assert!(e.contains("redis://HOST:PORT"), "{e}");
        let e = StoreSpec::parse("contended-lock").unwrap_err();
        assert!(e.contains("memory, file:DIR or redis://HOST:PORT"), "{e}");
    }

    #[test]
    fn the_file_store_keeps_replaces_and_deletes_values() {
        let dir = std::env::temp_dir().join(format!("lf-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = file_for(&dir, "course/2/modinfo");
        assert_eq!(file_get(&path).unwrap(), None);
        file_set(&path, "one").unwrap();
        file_set(&path, "two").unwrap();
        assert_eq!(file_get(&path).unwrap().as_deref(), Some("two"));
        assert!(dir.join("course%2%modinfo").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
