#!/usr/bin/env bash
# The life of a mounted image set at its edges: two `ploop mount` of one set at the same moment,
# `ploop umount` right after the server was killed, `resize` after a crash, a snapshot view mounted
# before the top, `umount -m` of a filesystem mounted by hand, and a read-write mount of a leaf
# snapshot. Every mount this test makes is undone by the EXIT trap, however the test ends.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/mount_ops_lib.sh"

mkdir -p A mA mV mX
MNTS=("$RT/mA" "$RT/mV" "$RT/mX")
A=$RT/A/DiskDescriptor.xml
must "init -s 512M (GPT + ext4)" pl init -s 512M A/root.hds || finish
IDS+=("$(run_id "$A")")

# ---- two mounts of one set at the same moment ----------------------------------------------------------
# Exactly one wins; the other fails without touching the winner (its run directory, its image).
for round in $(seq 10); do
	pl mount "$A" >"$T/m1.out" 2>"$T/m1.err" &
	p1=$!
	pl mount "$A" >"$T/m2.out" 2>"$T/m2.err" &
	p2=$!
	wait $p1
	rc1=$?
	wait $p2
	rc2=$?
	name="concurrent mounts, round $round"
	if [ $(((rc1 == 0) + (rc2 == 0))) = 1 ]; then
		loser=$T/m1.err
		[ $rc1 = 0 ] && loser=$T/m2.err
		if [ $((rc1 + rc2)) = 21 ]; then
			ok "$name: one mounted, the other failed with exit 21 ($(head -c 200 "$loser"))"
		else
			not_ok "$name: the loser failed with exit $((rc1 + rc2)), not 21 ($(head -c 200 "$loser"))"
		fi
	else
		not_ok "$name: exits $rc1 and $rc2 ($(cat "$T/m1.err" "$T/m2.err" | tr '\n' ' ' | head -c 300))"
	fi
	if inst "$A"; then
		check "$name: the winner serves (device $I_DEV, run directory and state in place)" \
			test -b "$I_DEV" -a "$I_MODE" = rw -a -e "/run/ploop/$(run_id "$A")/state"
		umount_set "$name: umount" "$A"
	fi
	checked "$name: every delta checks clean, not marked in use" "$A"
done
finish
