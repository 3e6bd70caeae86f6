/* The GPT of a ploop disk, as upstream lays it out: one Linux partition from the first cluster
 * boundary to the last one before the end (the backup table lives in the last cluster). Written
 * and resized on the block device, then announced to the kernel. */
#include <endian.h>
#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/random.h>

#include "internal.h"

#define GPT_ENTRIES 128
#define GPT_ENTRY_SIZE 128
#define GPT_TABLE_SECTORS (GPT_ENTRIES * GPT_ENTRY_SIZE / 512)	/* 32 */

struct gpt_header {
	uint8_t signature[8];
	uint32_t revision;
	uint32_t header_size;
	uint32_t header_crc;
	uint32_t reserved;
	uint64_t my_lba;
	uint64_t alt_lba;
	uint64_t first_usable;
	uint64_t last_usable;
	uint8_t disk_guid[16];
	uint64_t entries_lba;
	uint32_t n_entries;
	uint32_t entry_size;
	uint32_t entries_crc;
} __attribute__((packed));
_Static_assert(sizeof(struct gpt_header) == 92, "GPT header is 92 bytes");

struct gpt_entry {
	uint8_t type[16];
	uint8_t guid[16];
	uint64_t first_lba;
	uint64_t last_lba;
	uint64_t attrs;
	uint16_t name[36];
} __attribute__((packed));
_Static_assert(sizeof(struct gpt_entry) == GPT_ENTRY_SIZE, "GPT entry is 128 bytes");

/* 0FC63DAF-8483-4772-8E79-3D69D8477DE4, "Linux filesystem data", in its on-disk byte order. */
static const uint8_t linux_fs_type[16] = { 0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47,
					   0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4 };

static uint32_t crc32(const void *data, size_t len)
{
	static uint32_t table[256];
	const uint8_t *p = data;
	uint32_t c = 0xffffffffu;

	if (!table[1])
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t v = i;

			for (int k = 0; k < 8; k++)
				v = v & 1 ? 0xedb88320u ^ (v >> 1) : v >> 1;
			table[i] = v;
		}
	while (len--)
		c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

/* Partition 1 of a disk of @size sectors with @cs-sector clusters. */
static void partition_bounds(uint64_t size, uint32_t cs, uint64_t *first, uint64_t *last)
{
	uint64_t end = (size - cs) / cs * cs;

	*first = cs;
	*last = (end & ~7ULL) - 1;
}

/*
 * Writes straight to the device (O_DIRECT, with an aligned copy of @buf) where it can: a write that
 * reaches the disk only at writeback fails there with EIO whatever the cause, the buffer heads of a
 * block device keep no other error, while a direct write gets the device's own (ENOSPC from a full
 * host, which is exit 20, not 7). Where the device takes no direct writes, through the page cache.
 */
static int write_at(int fd, const void *buf, size_t len, uint64_t lba)
{
	int flags = fcntl(fd, F_GETFL);
	void *aligned = NULL;
	ssize_t n = -1;
	int e = EINVAL;

	if (flags >= 0 && !(flags & O_DIRECT) && !posix_memalign(&aligned, 4096, len) &&
	    !fcntl(fd, F_SETFL, flags | O_DIRECT)) {
		memcpy(aligned, buf, len);
		n = pwrite(fd, aligned, len, (off_t)(lba * 512));
		e = errno;
		fcntl(fd, F_SETFL, flags);
	}
	free(aligned);
	if (n < 0 && e == EINVAL) {
		n = pwrite(fd, buf, len, (off_t)(lba * 512));
		e = errno;
	}
	if (n == (ssize_t)len)
		return 0;
	return n < 0 ? -e : -EIO;
}

/* Writes header @h (at its my_lba, entries at its entries_lba) with fresh CRCs. */
static int write_table(int fd, struct gpt_header *h, const uint8_t *entries)
{
	uint8_t sec[512] = { 0 };
	int r;

	h->entries_crc = htole32(crc32(entries, GPT_ENTRIES * GPT_ENTRY_SIZE));
	h->header_crc = 0;
	h->header_crc = htole32(crc32(h, sizeof(*h)));
	memcpy(sec, h, sizeof(*h));
	r = write_at(fd, entries, GPT_ENTRIES * GPT_ENTRY_SIZE, le64toh(h->entries_lba));
	if (r)
		return r;
	return write_at(fd, sec, sizeof(sec), le64toh(h->my_lba));
}

static int write_both(int fd, uint64_t size, struct gpt_header *h, const uint8_t *entries)
{
	struct gpt_header b = *h;
	int r;

	h->my_lba = htole64(1);
	h->alt_lba = htole64(size - 1);
	h->entries_lba = htole64(2);
	b.my_lba = htole64(size - 1);
	b.alt_lba = htole64(1);
	b.entries_lba = htole64(size - 1 - GPT_TABLE_SECTORS);
	/* Backup first: the primary, which readers trust first, goes last - and only once the backup
	 * is durable (written and flushed), so a backup that cannot be written (a full host: the end of
	 * a grown disk is new space) leaves the old primary, consistent with the old backup. */
	r = write_table(fd, &b, entries);
	if (!r && fsync(fd))
		r = -errno;
	if (!r)
		r = write_table(fd, h, entries);
	if (!r && fsync(fd))
		r = -errno;
	return r;
}

int ploop_gpt_create(int fd, uint64_t size, uint32_t cs, struct ploop_error *err)
{
	uint8_t mbr[512] = { 0 };
	uint8_t *entries = calloc(GPT_ENTRIES, GPT_ENTRY_SIZE);
	struct gpt_entry *e = (struct gpt_entry *)entries;
	struct gpt_header h = { .signature = "EFI PART" };
	uint64_t first, last;
	int r;

	if (!entries)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "GPT");
	if (size < 4ULL * cs || size <= 2 * (GPT_TABLE_SECTORS + 2)) {
		free(entries);
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "disk of %llu sectors is too small for a partition table",
				  (unsigned long long)size);
	}
	partition_bounds(size, cs, &first, &last);
	/* Protective MBR: one partition of type 0xEE over the whole disk. */
	mbr[446 + 4] = 0xee;
	mbr[446 + 1] = 0x00;
	mbr[446 + 2] = 0x02;
	mbr[446 + 5] = mbr[446 + 6] = mbr[446 + 7] = 0xff;
	{
		uint32_t start = htole32(1), count = htole32(size - 1 > 0xffffffffULL ? 0xffffffffu : (uint32_t)(size - 1));

		memcpy(mbr + 446 + 8, &start, 4);
		memcpy(mbr + 446 + 12, &count, 4);
	}
	mbr[510] = 0x55;
	mbr[511] = 0xaa;
	h.revision = htole32(0x00010000);
	h.header_size = htole32(sizeof(h));
	h.first_usable = htole64(2 + GPT_TABLE_SECTORS);
	h.last_usable = htole64(size - 2 - GPT_TABLE_SECTORS);
	h.n_entries = htole32(GPT_ENTRIES);
	h.entry_size = htole32(GPT_ENTRY_SIZE);
	if (getrandom(h.disk_guid, 16, 0) != 16 || getrandom(e->guid, 16, 0) != 16) {
		free(entries);
		return ploop_fail(err, PLOOP_ERR_SYS, errno, "getrandom");
	}
	memcpy(e->type, linux_fs_type, 16);
	e->first_lba = htole64(first);
	e->last_lba = htole64(last);
	r = write_at(fd, mbr, sizeof(mbr), 0);
	if (!r)
		r = write_both(fd, size, &h, entries);
	free(entries);
	if (r)
		return ploop_fail(err, ploop_write_status(r), -r,
				  "cannot write the partition table");
	/* Kernels with partition support see it; ploopd serves partition 1 as a device of its own. */
	ioctl(fd, BLKRRPART, 0);
	return 0;
}

/* Reads and checks the primary GPT; entries in a malloc'd buffer. */
static int read_gpt(int fd, struct gpt_header *h, uint8_t **entries, struct ploop_error *err)
{
	uint8_t sec[512];
	uint32_t crc;

	if (pread(fd, sec, sizeof(sec), 512) != (ssize_t)sizeof(sec))
		return ploop_fail(err, PLOOP_ERR_READ, errno, "cannot read the partition table");
	memcpy(h, sec, sizeof(*h));
	crc = le32toh(h->header_crc);
	h->header_crc = 0;
	if (memcmp(h->signature, "EFI PART", 8) || le32toh(h->header_size) != sizeof(*h) ||
	    crc32(h, sizeof(*h)) != crc || le32toh(h->n_entries) != GPT_ENTRIES ||
	    le32toh(h->entry_size) != GPT_ENTRY_SIZE)
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "the partition table is not a GPT written by ploop");
	*entries = malloc(GPT_ENTRIES * GPT_ENTRY_SIZE);
	if (!*entries)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "GPT");
	if (pread(fd, *entries, GPT_ENTRIES * GPT_ENTRY_SIZE, (off_t)(le64toh(h->entries_lba) * 512)) !=
	    GPT_ENTRIES * GPT_ENTRY_SIZE) {
		free(*entries);
		return ploop_fail(err, PLOOP_ERR_READ, errno, "cannot read the partition entries");
	}
	return 0;
}

int ploop_gpt_partition(int fd, uint64_t *first, uint64_t *last, struct ploop_error *err)
{
	struct gpt_header h;
	uint8_t *entries;
	struct gpt_entry *e;

	if (read_gpt(fd, &h, &entries, err))
		return err->status;
	e = (struct gpt_entry *)entries;
	*first = le64toh(e->first_lba);
	*last = le64toh(e->last_lba);
	free(entries);
	return 0;
}

/*
 * For a disk now @size sectors: the backup table moves to the new end and partition 1 ends at the
 * new last cluster boundary (never shrinks here: shrinking the filesystem comes first, and the
 * caller passes the size it shrank to). The kernel learns the new partition size at once.
 */
int ploop_gpt_resize(int fd, uint64_t size, uint32_t cs, struct ploop_error *err)
{
	struct gpt_header h;
	uint8_t *entries;
	struct gpt_entry *e;
	uint64_t first, last;
	struct blkpg_partition part = { .pno = 1 };
	struct blkpg_ioctl_arg arg = { .op = BLKPG_RESIZE_PARTITION, .datalen = sizeof(part), .data = &part };
	int r;

	if (read_gpt(fd, &h, &entries, err))
		return err->status;
	e = (struct gpt_entry *)entries;
	partition_bounds(size, cs, &first, &last);
	e->last_lba = htole64(last);
	h.last_usable = htole64(size - 2 - GPT_TABLE_SECTORS);
	first = le64toh(e->first_lba);
	r = write_both(fd, size, &h, entries);
	free(entries);
	if (r)
		return ploop_fail(err, ploop_write_status(r), -r,
				  "cannot write the partition table");
	part.start = (long long)(first * 512);
	part.length = (long long)((last - first + 1) * 512);
	if (ioctl(fd, BLKPG, &arg))
		ioctl(fd, BLKRRPART, 0);	/* (without kernel partition support, nothing to tell) */
	return 0;
}

/* The sector a filesystem in partition 1 of a disk of @size sectors may not pass. */
uint64_t ploop_gpt_partition_end(uint64_t size, uint32_t cs)
{
	uint64_t first, last;

	partition_bounds(size, cs, &first, &last);
	return last + 1;
}
