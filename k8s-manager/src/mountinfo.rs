//! The kernel's mount table (`/proc/<pid>/mountinfo`), read as text: each
//! line's mount point, and after the ` - ` separator the file system type,
//! the source and the super block's options.

/// One line of the table, its fields as the kernel wrote them (the mount
/// point unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount<'a> {
    pub mount_point: String,
    pub fs_type: &'a str,
    pub options: &'a str,
}

/// Every line that reads.
pub fn mounts(table: &str) -> impl Iterator<Item = Mount<'_>> {
    table.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = unescape(left.split(' ').nth(4)?);
        let mut right = right.split(' ');
        let fs_type = right.next()?;
        let _source = right.next()?;
        let options = right.next()?;
        Some(Mount {
            mount_point,
            fs_type,
            options,
        })
    })
}

/// A mount point as written: space, tab, newline and backslash escaped as
/// `\ooo` (octal); any other byte as it is.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone_and_other_bytes_kept() {
        assert_eq!(unescape("/mnt/a\\040b\\011c"), "/mnt/a b\tc");
        assert_eq!(unescape("/mnt/caf\u{e9}"), "/mnt/caf\u{e9}");
        // A backslash not followed by three octal digits is itself.
        assert_eq!(unescape("/a\\09"), "/a\\09");
        assert_eq!(unescape("/end\\"), "/end\\");
    }

    #[test]
    fn lines_give_their_mount_point_type_and_options() {
        let table = "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n\
                     bad line\n\
                     41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:1 - cgroup2 cgroup2 rw\n";
        let found: Vec<Mount> = mounts(table).collect();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].mount_point, "/sys/fs/cgroup/freezer");
        assert_eq!(
            (found[0].fs_type, found[0].options),
            ("cgroup", "rw,freezer")
        );
        assert_eq!(found[1].fs_type, "cgroup2");
    }
}
