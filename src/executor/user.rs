//! `USER` resolution the way docker does it: names and numbers, `user`,
//! `user:group`, looked up in the step's own `/etc/passwd` and `/etc/group`.

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from /etc/group, when no group was given).
    pub groups: Vec<u32>,
    /// The home directory /etc/passwd gives the user, if it has an entry.
    pub home: Option<String>,
}

/// The colon-separated fields of each entry of a passwd or group file
/// (blank and `#` lines skipped).
pub(crate) fn entries(file: &[u8]) -> impl Iterator<Item = Vec<&str>> {
    std::str::from_utf8(file)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) against
/// the passwd and group files' contents (empty when a file is missing).
pub fn resolve(spec: &str, passwd: &[u8], group: &[u8]) -> Result<Identity, String> {
    let spec = if spec.is_empty() { "root" } else { spec };
    let (user, group_spec) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let numeric_user = user.parse::<u32>().ok();
    let entry = entries(passwd).find(|f| {
        f.len() >= 4
            && match numeric_user {
                Some(id) => f[2].parse::<u32>().ok() == Some(id),
                None => f[0] == user,
            }
    });
    let home = entry.as_ref().and_then(|f| f.get(5)).map(|h| h.to_string());
    let (uid, mut gid, name) = match (&entry, numeric_user) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("bad uid in /etc/passwd for {user}"))?,
            f[3].parse::<u32>().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (None, Some(id)) => (id, 0, None),
        (None, None) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    let mut groups = Vec::new();
    match group_spec {
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(id) => id,
                Err(_) => entries(group)
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?,
            };
        }
        None => {
            if let Some(name) = &name {
                for f in entries(group) {
                    if f.len() >= 4 && f[3].split(',').any(|m| m.trim() == name) {
                        if let Ok(id) = f[2].parse::<u32>() {
                            if id != gid && !groups.contains(&id) {
                                groups.push(id);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &[u8] = b"root:x:0:\napp:x:1000:\nstaff:x:50:app,other\nwheel:x:10:app\n";

    #[test]
    fn users_resolve_like_docker() {
        let id = |s| resolve(s, PASSWD, GROUP);
        assert_eq!(
            id("").unwrap(),
            Identity {
                uid: 0,
                gid: 0,
                home: Some("/root".into()),
                groups: vec![]
            }
        );
        assert_eq!(
            id("app").unwrap(),
            Identity {
                uid: 1000,
                gid: 1000,
                home: Some("/home/app".into()),
                groups: vec![50, 10]
            }
        );
        assert_eq!(id("1000").unwrap().groups, vec![50, 10]);
        assert_eq!(
            id("app:staff").unwrap(),
            Identity {
                uid: 1000,
                gid: 50,
                home: Some("/home/app".into()),
                groups: vec![]
            }
        );
        assert_eq!(
            id("4242").unwrap(),
            Identity {
                uid: 4242,
                gid: 0,
                home: None,
                groups: vec![]
            }
        );
        assert_eq!(
            id("4242:7").unwrap(),
            Identity {
                uid: 4242,
                gid: 7,
                home: None,
                groups: vec![]
            }
        );
        assert!(id("ghost")
            .unwrap_err()
            .contains("unable to find user ghost"));
        assert!(id("app:nogroup")
            .unwrap_err()
            .contains("unable to find group nogroup"));
    }
}
