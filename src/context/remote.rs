//! `ADD https://…`: the file is downloaded once per build into a private
//! temporary dir, named after the URL's last path segment, with mode 0600
//! and the mtime the server's `Last-Modified` gives, as BuildKit does. Its
//! content digest enters the cache key; `--checksum` is verified before
//! anything uses it.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::ContextError;
use crate::blob::Digest;

/// Whether an ADD source is a URL rbuild downloads.
/// (An `http(s)://…/repo.git` URL is a git repository instead.)
pub fn is_url(source: &str) -> bool {
    (source.starts_with("http://") || source.starts_with("https://"))
        && !crate::context::git::is_git(source)
}

/// A downloaded ADD source.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// Where it is on the host.
    pub path: PathBuf,
    /// Its file name (the URL's last path segment).
    pub name: String,
    /// sha256 of its content.
    pub digest: Digest,
}

/// The file name BuildKit gives a download: the URL path's last segment.
pub fn file_name(url: &str) -> String {
    let path = url
        .split_once("://")
        .map(|(_, rest)| rest.split_once('/').map(|(_, p)| p).unwrap_or(""))
        .unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    match path.rsplit('/').find(|s| !s.is_empty()) {
        Some(name) if name != "." && name != ".." => name.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// Seconds since the epoch of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// Downloads `url` into `dir`; checks `checksum` (`sha256:<hex>`) when given.
pub fn download(url: &str, dir: &Path, checksum: Option<&str>) -> Result<Downloaded, ContextError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ContextError::read(url, e))?;
    let name = file_name(url);
    let path = dir.join(&name);
    let (digest, modified) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| ContextError::download(url, e))?;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| ContextError::download(url, e))?;
        if !response.status().is_success() {
            return Err(ContextError::download(
                url,
                format!("the server answered {}", response.status()),
            ));
        }
        let modified = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let mut file = std::fs::File::create(&path).map_err(|e| ContextError::read(url, e))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ContextError::download(url, e))?
        {
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| ContextError::read(url, e))?;
        }
        file.sync_all().map_err(|e| ContextError::read(url, e))?;
        Ok::<_, ContextError>((Digest::from_sha256(hasher.finalize().into()), modified))
    })?;
    if let Some(want) = checksum {
        if want != digest.as_str() {
            return Err(ContextError::download(
                url,
                format!("checksum mismatch: --checksum={want}, the download is {digest}"),
            ));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ContextError::read(url, e))?;
    if let Some(secs) = modified {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(when))
            .map_err(|e| ContextError::read(url, e))?;
    }
    Ok(Downloaded { path, name, digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dates() {
        assert_eq!(
            file_name("https://example.com/a/b/tool.tar.gz?x=1"),
            "tool.tar.gz"
        );
        assert_eq!(file_name("http://h/dir/"), "dir");
        assert_eq!(file_name("http://h"), "__unnamed__");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
