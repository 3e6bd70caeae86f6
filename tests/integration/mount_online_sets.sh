#!/usr/bin/env bash
# Online operations on image sets of other shapes than mount_online's single line of snapshots: an
# online snapshot of a raw-based set (the server goes on read-write, data reads back, umount is
# clean) and one that fails half-way (the old chain served read-write, the descriptor unchanged).
# Every mount this test makes is undone by the EXIT trap, however the test ends.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/mount_ops_lib.sh"

# drop_caches: the next reads come from the server, not the page cache.
drop_caches() { sync && echo 3 >/proc/sys/vm/drop_caches; }
# writable NAME DIR: a file written and synced in DIR reads back after the caches are dropped.
writable() {
	local f=$2/w.$RANDOM
	if head -c $((3 * MiB + 17)) /dev/urandom >"$f" && sync -f "$2" && sum=$(sha "$f") && drop_caches &&
		test "$(sha "$f")" = "$sum"; then
		ok "$1"
	else
		not_ok "$1"
	fi
}
# dd_digest DD: the files of DD's directory and the descriptor's digest.
dd_digest() { (cd "$(dirname "$1")" && ls -A && sha256sum DiskDescriptor.xml); }

# ---- online snapshot of a raw-based set --------------------------------------------------------------------
mkdir -p R mR
MNTS=("$RT/mR")
R=$RT/R/DiskDescriptor.xml
must "raw: init -f raw" pl init -s 512M -f raw R/root.hds
mount_set "raw: mount" "$R" -m mR
put_files mR r1
must "raw: online snapshot of a raw-based set" pl snapshot "$R"
check "raw: the descriptor names 2 images" test "$(ndeltas "$R")" = 2
drop_caches
verify_files "raw: the files read back after the snapshot (from the raw base)" mR r1
writable "raw: the new top takes writes" mR
put_files mR r2
inst "$R" && check "raw: the server is listed read-write" test "$I_MODE" = rw
must "raw: a second online snapshot" pl snapshot "$R"
drop_caches
verify_files "raw: the files read back after the second snapshot" mR r1
verify_files "raw: ... and the later ones" mR r2
must "raw: online snapshot-delete of the first snapshot (merge into the raw base, not the top)" \
	pl snapshot-delete -u "$(pl snapshot-list -H -o uuid "$R" | sed -n 1p | tr -d ' ')" "$R"
drop_caches
verify_files "raw: the files read back after the merge into the raw base" mR r1
verify_files "raw: ... and the later ones" mR r2
writable "raw: the top still takes writes" mR
umount_set "raw: umount" "$R"
mount_set "raw: mount again" "$R" -m mR
verify_files "raw: every file reads back after umount + mount" mR r1
verify_files "raw: ... and the later ones" mR r2

# ---- a snapshot that fails half-way -------------------------------------------------------------------------
# The descriptor cannot be replaced (immutable): the new delta was made and opened, the old top
# marked clean; all of that is undone and the server goes on with the old chain.
at_exit chattr -i "$R"
before=$(dd_digest "$R")
depth0=$(ndeltas "$R")
if chattr +i "$R" 2>/dev/null; then
	refuse "failed snapshot: refused with one line" any pl snapshot "$R"
	chattr -i "$R"
	check "failed snapshot: the descriptor is unchanged, no file added or removed" test "$(dd_digest "$R")" = "$before"
	inst "$R" && check "failed snapshot: the server is still listed read-write" test "$I_MODE" = rw
	drop_caches
	verify_files "failed snapshot: the files read back" mR r1
	writable "failed snapshot: the old top still takes writes" mR
	must "failed snapshot: a snapshot works once the descriptor can be written" pl snapshot "$R"
	check "failed snapshot: ... and adds one image" test "$(ndeltas "$R")" = $((depth0 + 1))
	drop_caches
	verify_files "failed snapshot: the files read back after the next snapshot" mR r2
else
	ok "failed snapshot # SKIP chattr +i is not supported here"
fi
umount_set "raw: final umount" "$R"

finish
