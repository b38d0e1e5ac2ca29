#!/bin/busybox sh
# cvbench guest /init (PID 1 inside the Linux micro-VM), run by the kernel from the initramfs.
# Arguments: none; the workload's argv is $cvbench_argv (from the kernel command line).
# Output goes to /dev/console, the VM's serial port, which the harness reads.
# Milestones and the exit status go to the boot-timer page (see microvm/src/devices/boot_timer.rs).
BT=0xd0000000
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev 2>/dev/null
$bb mount -t tmpfs tmpfs /tmp
$bb devmem $((BT + 1)) 8 0xcb            # user space is running
$bb ip link set lo up
# eth0 was configured by the kernel (ip= on the command line); make sure it is up.
[ -e /sys/class/net/eth0 ] && $bb ip link set eth0 up
# The disk workload writes to /mnt when a virtio-blk disk with a filesystem is attached.
[ -b /dev/vda ] && $bb mount /dev/vda /mnt 2>/dev/null
# The workload's argv comes in the environment ($cvbench_argv, words joined by commas; see
# microvm/src/linux/cmdline.rs). A positional argument means the kernel handed us a parameter it
# did not know: refuse rather than run the workload with a shifted argv.
if [ $# -ne 0 ]; then
    echo "cvbench /init: unexpected arguments from the kernel (unknown parameters?): $*" > /dev/console
    status=125
elif [ -z "${cvbench_argv:-}" ]; then
    echo "cvbench /init: no cvbench_argv= on the kernel command line" > /dev/console
    status=125
else
    set -f
    IFS=,
    # shellcheck disable=SC2086
    set -- $cvbench_argv
    unset IFS
    set +f
    /cvbench-workload "$@"
    status=$?
fi
$bb devmem $((BT + 2)) 8 $status || $bb devmem $((BT + 2)) 8 $status   # exit status (our VMM's boot timer)
echo "cvbench-init: exit status $status" > /dev/console   # for VMMs without the boot timer (QEMU)
$bb sync
# Let the console drain before the VM goes: a write to /dev/console returns once the tty holds the
# bytes, not once the UART has sent them, and `reboot -f` does not wait. Re-applying the console's
# own settings is tcsetattr(TCSADRAIN), which waits until every written byte has left (seen in the
# test host without it: a guest whose console ended mid-report, `{"workload":"noop","metrics":{`).
$bb stty -F /dev/console "$($bb stty -F /dev/console -g)" 2>/dev/null
$bb reboot -f                             # reboot=k (i8042) or reboot=t (triple fault): the VMM exits
