# libvzquota, the vzquota tools and their unit tests (included by the top Makefile).
QUOTA_LIB_SRCS := $(wildcard quota/lib/*.c)
QUOTA_HDRS := quota/quota.h quota/quota_format.h quota/lib/internal.h
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
