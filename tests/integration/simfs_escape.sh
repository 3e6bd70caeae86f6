#!/usr/bin/env bash
# Escape attempts through a simfs mount: from a process chrooted into ROOT (symlinks to /, `..`
# chains, relative symlinks climbing up, a host-made symlink to a directory outside PRIVATE,
# create and hard link through it, a rename race), and from the host (hard links into ROOT of
# files outside, O_NOFOLLOW, metadata changes on a symlink that points outside). None may reach or
# change anything outside PRIVATE.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/tools/simfs-lib.sh"
simfs_skip_unless_root simfs_escape

P=$T/p R=$T/r O=$T/outside
mkdir -p "$P" "$R" "$O"
echo SECRET >"$O/secret"
chmod 0644 "$O/secret"
cp "$ROOT/build/bin/simfs-escape" "$P/simfs-escape"
ln -s "$O" "$P/hostlink"
expect_rc "mount" 0 sf mount "$P" "$R"
out_before=$(stat -c '%u %g %a %Y' "$O" "$O/secret")

# From inside: every attempt prints its own ok / not ok line.
timeout -k 5 120 chroot "$R" /simfs-escape "$O"
check "nothing was planted outside" test "$(ls "$O")" = secret
check "hard link of an outside file into ROOT refused" sh -c "! ln '$O/secret' '$R/stolen' 2>/dev/null"
check "O_NOFOLLOW on a symlink to outside refused" sh -c "! dd if='$R/hostlink' iflag=nofollow of=/dev/null status=none 2>/dev/null"
check "readlink shows the link, not the target" test "$(readlink "$R/hostlink")" = "$O"
chown -h 1234 "$R/hostlink"
touch -h -d @1000000 "$R/hostlink"
setfattr -h -n user.x -v 1 "$R/hostlink" 2>/dev/null
check "chown -h / touch -h on the symlink changed only the symlink" \
	test "$(stat -c %u "$P/hostlink") $(stat -c '%u %g %a %Y' "$O" "$O/secret" | tr '\n' ' ')" = "1234 $(echo $out_before) "
check "no xattr landed outside" sh -c "! getfattr -d '$O' 2>/dev/null | grep -q user.x"
check "lookup of .. from the mount root stays inside" test "$(cd "$R/.." && pwd -P)" = "$T"
expect_rc "umount" 0 sf umount "$R"
finish
