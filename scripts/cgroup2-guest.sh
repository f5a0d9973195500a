#!/usr/bin/env bash
# rbuild's limits on the unified cgroup hierarchy (cgroup v2), in a qemu
# guest: this VM is cgroup v1 hybrid, and most Kubernetes nodes and CI
# runners are v2. Boots Debian's kernel (linux-image-amd64, downloaded
# with apt-get into the work dir, never installed) with an initramfs that
# holds Debian's static busybox, the given rbuild binary and its
# libraries, and runs the scenario below as PID 1: the guest is shaped
# like a pod (rbuild in a cgroup namespace whose root holds processes, so
# the v2 rule that such a cgroup cannot enable controllers for children
# applies), and rbuild builds with --memory, --pids-limit and --cpus.
# Prints the guest's console; tests/cgroup_v2.rs reads the marker lines.
#
# Usage: scripts/cgroup2-guest.sh RBUILD_BINARY [WORK_DIR]
# Needs: qemu-system-x86 (software emulation; GUEST_ACCEL=kvm to try KVM),
# busybox-static, apt-get (for the kernel package), cpio. About 20 s.
set -euo pipefail

rbuild=$(readlink -f "${1:?usage: $0 RBUILD_BINARY [WORK_DIR]}")
work=$(readlink -f "${2:-$(dirname "$0")/../target/cgroup2-guest}")
mkdir -p "$work"

# The kernel: Debian's current one for this release, unpacked once.
kdir="$work/kernel"
if [[ ! -f "$kdir/done" ]]; then
    rm -rf "$kdir" && mkdir -p "$kdir"
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    (cd "$kdir" && apt-get download -q "$pkg" >/dev/null 2>&1)
    dpkg-deb -x "$kdir"/*.deb "$kdir/x"
    touch "$kdir/done"
fi
vmlinuz=$(ls "$kdir"/x/boot/vmlinuz-*)
overlay_ko=$(find "$kdir/x/lib/modules" -name overlay.ko | head -1)

# The initramfs.
root="$work/initramfs"
rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp,work,etc}
cp /bin/busybox "$root/bin/busybox"
# Without its debug info: the guest only runs it.
strip -o "$root/bin/rbuild" "$rbuild" 2>/dev/null || cp "$rbuild" "$root/bin/rbuild"
cp "$overlay_ko" "$root/overlay.ko"
# util-linux's unshare (busybox's has no cgroup namespace).
cp "$(command -v unshare)" "$root/bin/unshare.real"
for bin in "$rbuild" "$(command -v unshare)"; do
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -n "$lib" "$root$lib"
    done
done
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

cat > "$root/work/Dockerfile.oom" <<'EOF'
FROM busybox
RUN dd if=/dev/zero of=/dev/null bs=256M count=1
EOF
cat > "$root/work/Dockerfile.pids" <<'EOF'
FROM busybox
RUN i=0; while [ $i -lt 200 ]; do sleep 3000 & i=$((i+1)); done; wait
EOF
cat > "$root/work/Dockerfile.limits" <<'EOF'
FROM busybox
RUN echo "memory.max $(cat /sys/fs/cgroup/memory.max)" && echo "cpu.max $(cat /sys/fs/cgroup/cpu.max)" && echo "pids.max $(cat /sys/fs/cgroup/pids.max)" && dd if=/dev/zero of=/dev/null bs=8M count=1 2>/dev/null && echo fits
EOF

# What runs in the pod: rbuild, in the pod's cgroup namespace.
cat > "$root/work/scenario.sh" <<'EOF'
# The pod's view of the hierarchy: its own cgroup as the root.
umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "POD-CGROUP $(cat /proc/self/cgroup)"
echo "POD-PROCS $(wc -l < /sys/fs/cgroup/cgroup.procs)"
rbuild info --root /tmp/r | sed -n 's/^cgroup: /CG-INFO /p'
run() {
    name=$1; shift
    rbuild build --progress=plain --root /tmp/r "$@" -o type=oci,dest=/tmp/out-$name,tar=false /work > /tmp/$name.log 2>&1
    echo "RC $name $?"
    sed "s/^/LOG $name /" /tmp/$name.log
}
run oom --memory 64m -f /work/Dockerfile.oom
run pids --pids-limit 32 -f /work/Dockerfile.pids
run limits --memory 64m --cpus 0.5 --pids-limit 100 -f /work/Dockerfile.limits
echo "LEFT-SLEEPERS $(ps -o args | grep -c '^sleep 3000')"
echo "STEP-CGROUPS-LEFT $(find /sys/fs/cgroup -mindepth 1 -type d -name 'rbuild-*' | wc -l)"
EOF

cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
ln -s /bin/unshare.real /bin/unshare-cg
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/shm /dev/pts && mount -t tmpfs shm /dev/shm && mount -t devpts pts /dev/pts
mount -t tmpfs tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
insmod /overlay.ko
echo "GUEST-KERNEL $(uname -r)"
echo "GUEST-CONTROLLERS $(cat /sys/fs/cgroup/cgroup.controllers)"
# The node gives the pod its controllers; the pod's own cgroup then holds
# the build's processes (its shell, rbuild), as a container's does.
echo "+memory +pids +cpu" > /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/pod
echo $$ > /sys/fs/cgroup/pod/cgroup.procs
cd /work
/bin/unshare-cg --cgroup --mount --propagation private sh /work/scenario.sh
echo "GUEST-DONE"
poweroff -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$work/initramfs.gz"

# Software emulation unless GUEST_ACCEL=kvm: on this VM (nested under an
# AMD host) a KVM guest's kernel stops before its first console line.
accel=(-accel tcg)
if [[ ${GUEST_ACCEL:-tcg} == kvm ]]; then accel=(-enable-kvm); fi
timeout 600 qemu-system-x86_64 "${accel[@]}" -m 1024 -smp 2 -nographic -no-reboot \
    -kernel "$vmlinuz" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3" </dev/null
