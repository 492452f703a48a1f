//! Real mounted filesystems and their usage.
//!
//! /proc/self/mountinfo is parsed by hand rather than with procfs's `MountInfo`: that parser
//! leaves `\040`-style escapes in paths and builds option maps we do not use, and the rules
//! that matter here (which filesystems are real, which mounts are the same filesystem) are ours
//! anyway. mountinfo rather than /proc/mounts because only mountinfo gives the device number and
//! the root of each mount, which is how bind mounts are recognised.

use std::collections::HashMap;
use std::hash::Hash;

use hmonitor_proto::DiskInfo;

/// One line of /proc/PID/mountinfo, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount source: a block device, "server:/export", a ZFS dataset, or a pseudo name.
    pub device: String,
    /// Mount point.
    pub mount: String,
    pub fstype: String,
    /// "major:minor" of the filesystem: equal for every mount of one filesystem.
    pub dev_id: String,
    /// The directory of the filesystem mounted there: "/" unless a bind mount of a subtree.
    pub root: String,
}

/// Filesystems that hold no user data: kernel interfaces, memory, read-only images.
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "ramfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nfsd",
    "nsfs",
    "efivarfs",
    "selinuxfs",
    "sockfs",
    "pipefs",
    // Snaps and container images: read-only and always "full".
    "squashfs",
    "erofs",
    // Install media and cloud-init config drives.
    "iso9660",
    // A container's layered root: its space is that of the disk below, listed in its own
    // right on the host (see `real_filesystems` for the one exception).
    "overlay",
    "overlayfs",
    "aufs",
    "fuse.lxcfs",
    "fuse.portal",
    "fuse.gvfsd-fuse",
    "fuse.snapfuse",
    "fuse.xdg-document-portal",
];

/// Local disk filesystems (block devices, or a pool for ZFS).
const DISK: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "vfat", "msdos", "exfat", "ntfs",
    "ntfs3", "fuseblk", "jfs", "reiserfs", "bcachefs", "nilfs2", "ocfs2", "gfs2", "hfsplus",
];

/// Network and cluster filesystems: the shared storage of a GPU cluster.
const NETWORK: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "fuse.ceph",
    "fuse.ceph-fuse",
    "lustre",
    "beegfs",
    "gpfs",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
    "fuse.juicefs",
    "juicefs",
    "fuse.mfs",
    "wekafs",
    "panfs",
];

/// Mount points below these belong to a container runtime or to snapd: per-container views of
/// storage already counted, which on a busy node would number in the hundreds.
const RUNTIME_DIRS: &[&str] = &[
    "/var/lib/docker/",
    "/var/lib/containers/",
    "/var/lib/containerd/",
    "/run/containerd/",
    "/run/docker/",
    "/var/lib/kubelet/pods/",
    "/var/lib/kubelet/plugins/",
    "/snap/",
];

/// Files a container runtime bind-mounts into every container, from the host's disk. Inside a
/// container they would otherwise stand for that disk under a file's name.
const RUNTIME_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev/termination-log",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Disk,
    Network,
}

/// Parses /proc/PID/mountinfo text. A line that does not parse is skipped.
///
/// Format (proc(5)): `id parent major:minor root mount-point options [optional…] - fstype
/// source super-options`, with space, tab, newline and backslash in paths written as `\040`,
/// `\011`, `\012` and `\134`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    // Not split_whitespace: a source may be an empty field.
    let fields: Vec<&str> = line.split(' ').collect();
    let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    Some(Mount {
        dev_id: fields.get(2)?.to_string(),
        root: unescape(fields.get(3)?),
        mount: unescape(fields.get(4)?),
        fstype: unescape(fields.get(dash + 1)?),
        device: unescape(fields.get(dash + 2)?),
    })
}

/// Undoes the kernel's octal escapes (`\NNN`); anything else is kept as it is.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3'
        });
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

fn kind(m: &Mount) -> Option<Kind> {
    let fstype = m.fstype.as_str();
    if PSEUDO.contains(&fstype) {
        return None;
    }
    if DISK.contains(&fstype) {
        return Some(Kind::Disk);
    }
    if NETWORK.contains(&fstype) {
        return Some(Kind::Network);
    }
    // An unlisted filesystem on a block device is a disk; an unlisted FUSE filesystem is left
    // out, because many report made-up sizes (object-store mounts) or none at all.
    (!fstype.starts_with("fuse") && m.device.starts_with("/dev/")).then_some(Kind::Disk)
}

/// Keeps the mounts that are real filesystems, each filesystem once.
///
/// Kept: disk filesystems (ext4, xfs, btrfs, zfs, …), network and cluster filesystems (nfs,
/// cifs, ceph, lustre, beegfs, gpfs, …), and any other filesystem on a /dev block device.
/// Dropped: pseudo and memory filesystems, read-only images, overlays, FUSE helpers, and mounts
/// inside container runtimes' state directories. One exception: an overlay mounted at "/" is
/// kept, because inside a container it is the only view of the disk that holds the container.
///
/// Several mounts of one filesystem (bind mounts, btrfs subvolumes, one NFS export mounted
/// twice) are one disk: same `dev_id`, or for a network filesystem the same source. Of these
/// the one mounting the filesystem's root ("/") is kept, else the shortest mount path.
pub fn real_filesystems(mounts: Vec<Mount>) -> Vec<Mount> {
    let kept: Vec<(Mount, Kind)> = mounts
        .into_iter()
        .filter_map(|m| {
            let is_container_root =
                m.mount == "/" && matches!(m.fstype.as_str(), "overlay" | "overlayfs" | "aufs");
            let kind = if is_container_root {
                Some(Kind::Disk)
            } else {
                kind(&m)
            }?;
            let in_runtime_dir = RUNTIME_DIRS.iter().any(|d| m.mount.starts_with(d));
            let runtime_file = RUNTIME_FILES.contains(&m.mount.as_str());
            (!in_runtime_dir && !runtime_file).then_some((m, kind))
        })
        .collect();
    let kept = dedupe(kept, |(m, _)| Some(m.dev_id.clone()));
    let kept = dedupe(kept, |(m, kind)| {
        (*kind == Kind::Network).then(|| m.device.trim_end_matches('/').to_string())
    });
    kept.into_iter().map(|(m, _)| m).collect()
}

/// Keeps, of the entries with equal keys, the best one (see `better`), in their first order.
/// Entries whose key is `None` are all kept.
fn dedupe<K: Eq + Hash>(
    entries: Vec<(Mount, Kind)>,
    key: impl Fn(&(Mount, Kind)) -> Option<K>,
) -> Vec<(Mount, Kind)> {
    let mut best: HashMap<K, usize> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if let Some(k) = key(entry) {
            best.entry(k)
                .and_modify(|b| {
                    if better(&entry.0, &entries[*b].0) {
                        *b = i;
                    }
                })
                .or_insert(i);
        }
    }
    entries
        .into_iter()
        .enumerate()
        .filter(|(i, entry)| key(entry).is_none_or(|k| best.get(&k) == Some(i)))
        .map(|(_, entry)| entry)
        .collect()
}

/// Whether `a` represents its filesystem better than `b`: it mounts the filesystem's root, or,
/// both or neither doing so, its mount path is shorter.
fn better(a: &Mount, b: &Mount) -> bool {
    match (a.root == "/", b.root == "/") {
        (true, false) => true,
        (false, true) => false,
        _ => a.mount.len() < b.mount.len(),
    }
}

/// Usage of every real mounted filesystem (see [`real_filesystems`]) in this process's mount
/// namespace. A filesystem that cannot be measured (permission, a stale NFS handle) is left out
/// and logged at debug level; the list itself never fails.
///
/// `statvfs` on a hung NFS server blocks, for as long as the mount's timeouts say (forever with
/// `hard`): call this on a thread of its own, never on the sampling or async threads.
#[allow(clippy::useless_conversion)]
pub fn read_disks() -> Vec<DiskInfo> {
    let text = match std::fs::read(MOUNTINFO) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            tracing::debug!("{MOUNTINFO}: {e}");
            return Vec::new();
        }
    };
    real_filesystems(parse_mountinfo(&text))
        .into_iter()
        .filter_map(|m| {
            let st = nix::sys::statvfs::statvfs(m.mount.as_str())
                .map_err(|e| tracing::debug!("statvfs {}: {e}", m.mount))
                .ok()?;
            // Fragment size is the unit of the block counts (statvfs(3)).
            // The `u64::from`s are no-ops here but not on 32-bit targets, where `fsblkcnt_t`
            // and `c_ulong` may be u32.
            let unit = u64::from(st.fragment_size());
            let blocks = u64::from(st.blocks());
            let total = blocks.saturating_mul(unit);
            if total == 0 {
                // Some filesystems report no size at all; there is nothing to show.
                tracing::debug!("{}: reports no size", m.mount);
                return None;
            }
            let used = blocks
                .saturating_sub(u64::from(st.blocks_free()))
                .saturating_mul(unit);
            let avail = u64::from(st.blocks_available()).saturating_mul(unit);
            Some(DiskInfo {
                device: m.device,
                used,
                total,
                mount: m.mount,
                fstype: m.fstype,
                avail,
            })
        })
        .collect()
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(real: &[Mount]) -> Vec<(&str, &str)> {
        real.iter()
            .map(|m| (m.mount.as_str(), m.device.as_str()))
            .collect()
    }

    const DEBIAN: &str = "\
22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 28 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=16360972k,nr_inodes=4090243,mode=755
25 24 0:22 / /dev/pts rw,nosuid,noexec,relatime shared:3 - devpts devpts rw,gid=5,mode=620,ptmxmode=000
26 28 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=3276752k,mode=755
28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
29 22 0:6 / /sys/kernel/security rw,nosuid,nodev,noexec,relatime shared:8 - securityfs securityfs rw
30 24 0:25 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw
32 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
33 22 0:28 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
34 22 0:29 / /sys/firmware/efi/efivars rw,nosuid,nodev,noexec,relatime shared:11 - efivarfs efivarfs rw
35 22 0:30 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:13 - bpf bpf rw,mode=700
36 23 0:31 / /proc/sys/fs/binfmt_misc rw,relatime shared:14 - autofs systemd-1 rw,fd=30,pgrp=1,timeout=0,minproto=5,maxproto=5,direct
37 24 0:19 / /dev/mqueue rw,nosuid,nodev,noexec,relatime shared:15 - mqueue mqueue rw
38 24 0:32 / /dev/hugepages rw,relatime shared:16 - hugetlbfs hugetlbfs rw,pagesize=2M
39 22 0:7 / /sys/kernel/debug rw,nosuid,nodev,noexec,relatime shared:17 - debugfs debugfs rw
40 22 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime shared:18 - tracefs tracefs rw
41 22 0:33 / /sys/fs/fuse/connections rw,nosuid,nodev,noexec,relatime shared:19 - fusectl fusectl rw
42 22 0:20 / /sys/kernel/config rw,nosuid,nodev,noexec,relatime shared:20 - configfs configfs rw
70 28 259:1 / /boot/efi rw,relatime shared:31 - vfat /dev/nvme0n1p1 rw,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=mixed,utf8,errors=remount-ro
73 28 8:1 / /data rw,relatime shared:33 - xfs /dev/sda1 rw,attr2,inode64,logbufs=8,logbsize=32k,noquota
76 36 0:35 / /proc/sys/fs/binfmt_misc rw,nosuid,nodev,noexec,relatime shared:35 - binfmt_misc binfmt_misc rw
80 28 7:0 / /snap/core22/1380 ro,nodev,relatime shared:37 - squashfs /dev/loop0 ro,errors=continue
501 26 0:48 / /run/user/1000 rw,nosuid,nodev,relatime shared:263 - tmpfs tmpfs rw,size=3276748k,nr_inodes=819187,mode=700,uid=1000,gid=1000
514 501 0:49 / /run/user/1000/gvfs rw,nosuid,nodev,relatime shared:272 - fuse.gvfsd-fuse gvfsd-fuse rw,user_id=1000,group_id=1000
520 28 0:50 / /var/lib/lxcfs rw,nosuid,nodev,relatime shared:280 - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
";

    #[test]
    fn debian_host() {
        let real = real_filesystems(parse_mountinfo(DEBIAN));
        assert_eq!(
            mounts(&real),
            [
                ("/", "/dev/nvme0n1p2"),
                ("/boot/efi", "/dev/nvme0n1p1"),
                ("/data", "/dev/sda1"),
            ]
        );
        assert_eq!(
            real[0],
            Mount {
                device: "/dev/nvme0n1p2".into(),
                mount: "/".into(),
                fstype: "ext4".into(),
                dev_id: "259:2".into(),
                root: "/".into(),
            }
        );
    }

    const DOCKER_HOST: &str = "\
25 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
26 25 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
27 25 8:2 /home /srv/home rw,relatime shared:1 - ext4 /dev/sda2 rw
28 25 8:2 /var/lib/docker /var/lib/docker rw,relatime shared:1 - ext4 /dev/sda2 rw
29 25 8:3 /scratch /mnt/scratch rw,relatime shared:40 - xfs /dev/sda3 rw
30 25 8:3 /scratch/shared /shared rw,relatime shared:40 - xfs /dev/sda3 rw
412 28 0:91 / /var/lib/docker/overlay2/0d6c1f8e7a/merged rw,relatime shared:220 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/0d6c1f8e7a/diff,workdir=/var/lib/docker/overlay2/0d6c1f8e7a/work
430 28 0:92 / /var/lib/docker/containers/0d6c1f8e7a/mounts/shm rw,nosuid,nodev,noexec,relatime shared:230 - tmpfs shm rw,size=65536k
445 27 0:4 net:[4026532613] /run/docker/netns/4b1c9e2d rw shared:235 - nsfs nsfs rw
";

    #[test]
    fn docker_host_with_overlays_and_bind_mounts() {
        let real = real_filesystems(parse_mountinfo(DOCKER_HOST));
        // /srv/home is a bind of the root disk; of /dev/sda3's two subtree binds the shorter
        // mount path stands for the disk.
        assert_eq!(
            mounts(&real),
            [("/", "/dev/sda2"), ("/shared", "/dev/sda3")]
        );
    }

    const IN_A_CONTAINER: &str = "\
612 540 0:141 / / rw,relatime master:220 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X,upperdir=/var/lib/docker/overlay2/1/diff,workdir=/var/lib/docker/overlay2/1/work
613 612 0:144 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
620 612 8:2 /var/lib/docker/containers/1f2e/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda2 rw
621 612 8:2 /var/lib/docker/containers/1f2e/hostname /etc/hostname rw,relatime - ext4 /dev/sda2 rw
622 612 8:2 /var/lib/docker/containers/1f2e/hosts /etc/hosts rw,relatime - ext4 /dev/sda2 rw
623 612 8:3 /scratch/datasets /datasets ro,relatime - xfs /dev/sda3 rw
";

    #[test]
    fn inside_a_container() {
        let real = real_filesystems(parse_mountinfo(IN_A_CONTAINER));
        assert_eq!(
            mounts(&real),
            [("/", "overlay"), ("/datasets", "/dev/sda3")]
        );
    }

    const NFS_AND_ZFS: &str = "\
24 1 0:23 / / rw,relatime shared:1 - zfs rpool/ROOT/ubuntu rw,xattr,posixacl
25 24 0:24 / /home rw,relatime shared:2 - zfs rpool/home rw,xattr,posixacl
26 24 0:25 / /tank rw,relatime shared:3 - zfs tank rw,xattr,noacl
27 26 0:26 / /tank/datasets rw,relatime shared:4 - zfs tank/datasets rw,xattr,noacl
90 24 0:55 / /home/shared rw,relatime shared:50 - nfs4 fileserver:/export/home rw,vers=4.2,rsize=1048576,wsize=1048576,hard,proto=tcp,addr=10.0.0.5
91 24 0:56 / /mnt/home rw,relatime shared:51 - nfs4 fileserver:/export/home/ rw,vers=4.2,nosharecache,hard,proto=tcp,addr=10.0.0.5
92 24 0:57 / /models rw,relatime shared:52 - nfs fileserver:/export/models rw,vers=3,hard,proto=tcp,addr=10.0.0.5
93 24 0:58 / /lustre rw,relatime shared:53 - lustre 10.0.0.9@o2ib:/lfs rw,flock
94 24 0:59 / /cephfs rw,relatime shared:54 - ceph 10.0.0.11:6789,10.0.0.12:6789:/ rw,name=admin
95 24 0:60 / /gdrive rw,relatime shared:55 - fuse.rclone gdrive: rw,user_id=1000
";

    #[test]
    fn nfs_and_zfs_host() {
        let real = real_filesystems(parse_mountinfo(NFS_AND_ZFS));
        assert_eq!(
            mounts(&real),
            [
                ("/", "rpool/ROOT/ubuntu"),
                ("/home", "rpool/home"),
                ("/tank", "tank"),
                ("/tank/datasets", "tank/datasets"),
                // The same export mounted twice with nosharecache (two device numbers, the
                // source once with a trailing slash): once, at the shorter path.
                ("/mnt/home", "fileserver:/export/home/"),
                ("/models", "fileserver:/export/models"),
                ("/lustre", "10.0.0.9@o2ib:/lfs"),
                ("/cephfs", "10.0.0.11:6789,10.0.0.12:6789:/"),
            ]
        );
    }

    #[test]
    fn escaped_paths() {
        let text = "50 28 8:17 / /mnt/my\\040disk rw,relatime shared:30 - ext4 /dev/sdb1 rw\n\
                    51 28 8:18 /a\\134b /mnt/tab\\011and\\012newline rw - ext4 /dev/sdb2 rw\n";
        let parsed = parse_mountinfo(text);
        assert_eq!(parsed[0].mount, "/mnt/my disk");
        assert_eq!(parsed[1].root, "/a\\b");
        assert_eq!(parsed[1].mount, "/mnt/tab\tand\nnewline");
        assert_eq!(unescape("\\999 and \\"), "\\999 and \\");
    }

    #[test]
    fn optional_fields_and_bad_lines() {
        let text = "1 2 3\n\
                    60 28 8:33 / /x rw shared:5 master:2 propagate_from:1 - ext4 /dev/sdc1 rw\n\
                    61 28 8:34 / /y rw - ext4\n";
        let parsed = parse_mountinfo(text);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].device, "/dev/sdc1");
        assert_eq!(parsed[0].fstype, "ext4");
    }

    #[test]
    fn unknown_block_filesystem_is_kept_unknown_fuse_is_not() {
        let text = "70 28 8:49 / /ext rw - newfs /dev/sdd1 rw\n\
                    71 28 0:80 / /fuse rw - fuse /dev/fuse rw\n";
        let real = real_filesystems(parse_mountinfo(text));
        assert_eq!(mounts(&real), [("/ext", "/dev/sdd1")]);
    }

    #[test]
    fn read_disks_on_this_machine() {
        let disks = read_disks();
        assert!(!disks.is_empty(), "no disks found");
        assert!(
            disks.iter().any(|d| d.mount == "/"),
            "no root filesystem in {disks:?}"
        );
        for d in &disks {
            assert!(d.used <= d.total, "{d:?}");
            assert!(d.avail <= d.total, "{d:?}");
        }
    }
}
