# simfs: the FUSE bind filesystem with vzquota enforcement, and its test helpers (included by the
# top Makefile).
SIMFS_SRCS := $(wildcard simfs/*.c)
SIMFS_HDRS := simfs/simfs.h quota/quota.h
SIMFS_OBJS := $(SIMFS_SRCS:%.c=$(BUILD)/simfs-obj/%.o)

COMPONENT_BINS += $(BUILD)/bin/simfs $(BUILD)/bin/simfs-qtool $(BUILD)/bin/simfs-escape

$(BUILD)/simfs-obj/%.o: %.c $(SIMFS_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/bin/simfs: $(SIMFS_OBJS) $(BUILD)/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -pthread -o $@ $^ $(FUSE_LIBS)

# Test helpers: quota usage of a file against a fresh scan; escape attempts from inside a chroot.
$(BUILD)/bin/simfs-qtool: tests/tools/simfs-qtool.c quota/quota.h $(BUILD)/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libvzquota.a

$(BUILD)/bin/simfs-escape: tests/tools/simfs-escape.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -static -o $@ $< || $(CC) $(ALL_CFLAGS) -o $@ $<
