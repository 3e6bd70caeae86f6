# libvzquota, the vzquota tools and their unit tests (included by the top Makefile).
QUOTA_LIB_SRCS := $(wildcard quota/lib/*.c) common/errmsg.c common/openfile.c
QUOTA_HDRS := common/errmsg.h common/openfile.h quota/quota.h quota/quota_format.h quota/lib/internal.h
QUOTA_CFLAGS = $(CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64
QUOTA_SAN_CFLAGS = $(SAN_FLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64
QUOTA_LIB_OBJS := $(QUOTA_LIB_SRCS:%.c=$(BUILD)/quota-obj/%.o)
QUOTA_SAN_LIB_OBJS := $(QUOTA_LIB_SRCS:%.c=$(BUILD)/san/quota-obj/%.o)

COMPONENT_BINS += $(BUILD)/libvzquota.a $(BUILD)/san/libvzquota.a

$(BUILD)/quota-obj/%.o: %.c $(QUOTA_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(QUOTA_CFLAGS) -c $< -o $@

$(BUILD)/san/quota-obj/%.o: %.c $(QUOTA_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(QUOTA_SAN_CFLAGS) -c $< -o $@

$(BUILD)/libvzquota.a: $(QUOTA_LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/san/libvzquota.a: $(QUOTA_SAN_LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

COMPONENT_BINS += $(BUILD)/bin/vzquota $(BUILD)/bin/vzdqcheck $(BUILD)/san/bin/vzquota

$(BUILD)/bin/vzquota: $(BUILD)/quota-obj/quota/cli/vzquota.o $(BUILD)/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^

$(BUILD)/bin/vzdqcheck: $(BUILD)/quota-obj/quota/cli/vzdqcheck.o $(BUILD)/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^

# The tool under ASan+UBSan: the bad-input tests run it.
$(BUILD)/san/bin/vzquota: $(BUILD)/san/quota-obj/quota/cli/vzquota.o $(BUILD)/san/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_FLAGS) -o $@ $^

COMPONENT_BINS += $(BUILD)/unit/quota-tests $(BUILD)/unit/quota-tests-san

$(BUILD)/unit/quota-tests: quota/tests/unit.c $(QUOTA_HDRS) $(BUILD)/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(QUOTA_CFLAGS) -o $@ $< $(BUILD)/libvzquota.a

$(BUILD)/unit/quota-tests-san: quota/tests/unit.c $(QUOTA_HDRS) $(BUILD)/san/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(QUOTA_SAN_CFLAGS) -o $@ $< $(BUILD)/san/libvzquota.a

# A stand-in for the simfs daemon, for the integration tests (tests/integration/quota_*.sh).
COMPONENT_BINS += $(BUILD)/bin/vzq-fakelive
$(BUILD)/bin/vzq-fakelive: quota/tests/fakelive.c $(QUOTA_HDRS) $(BUILD)/libvzquota.a
	@mkdir -p $(dir $@)
	$(CC) $(QUOTA_CFLAGS) -o $@ $< $(BUILD)/libvzquota.a
