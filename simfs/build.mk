# simfs: the FUSE bind filesystem with vzquota enforcement, and its test helpers (included by the
# top Makefile).
SIMFS_SRCS := $(wildcard simfs/*.c) common/fuse_ring.c common/mountinfo.c
SIMFS_HDRS := simfs/simfs.h quota/quota.h common/fuse_ring.h common/mountinfo.h
SIMFS_OBJS := $(SIMFS_SRCS:%.c=$(BUILD)/simfs-obj/%.o)

COMPONENT_BINS += $(BUILD)/bin/simfs $(BUILD)/bin/simfs-qtool $(BUILD)/bin/simfs-escape

$(BUILD)/simfs-obj/%.o: %.c $(SIMFS_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/bin/simfs: $(SIMFS_OBJS) $(BUILD)/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -pthread -o $@ $^ $(FUSE_LIBS) -luring

# Test helpers: quota usage of a file against a fresh scan; escape attempts from inside a chroot.
$(BUILD)/bin/simfs-qtool: tests/tools/simfs-qtool.c quota/quota.h $(BUILD)/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libvzquota.a

$(BUILD)/bin/simfs-escape: tests/tools/simfs-escape.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -static -o $@ $< || $(CC) $(ALL_CFLAGS) -o $@ $<

# The daemon under AddressSanitizer + UBSan: the POSIX test runs one instance of it.
COMPONENT_BINS += $(BUILD)/san/bin/simfs
$(BUILD)/san/bin/simfs: $(SIMFS_SRCS) $(SIMFS_HDRS) $(BUILD)/san/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_FLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 $(FUSE_CFLAGS) -pthread -o $@ \
		$(SIMFS_SRCS) $(BUILD)/san/libvzquota.a $(FUSE_LIBS) -luring
