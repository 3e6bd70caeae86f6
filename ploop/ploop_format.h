/* SPDX-License-Identifier: GPL-2.0 */
/*
 * On-disk format of ploop deltas (v1 "WithoutFreeSpace", v2 "WithouFreSpacExt").
 * Shared by the userspace library and the kernel target (kernel/dm-ploop):
 * definitions only.  Kernel style, so that it passes checkpatch in the tree.
 */
#ifndef PLOOP_FORMAT_H
#define PLOOP_FORMAT_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/build_bug.h>
#define ploop_u8 __u8
#define ploop_u32 __u32
#define ploop_u64 __u64
#define PLOOP_PACKED __packed
#define PLOOP_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#include <stdint.h>
#define ploop_u8 uint8_t
#define ploop_u32 uint32_t
#define ploop_u64 uint64_t
#define PLOOP_PACKED	/* #pragma pack below: the same layout */
#define PLOOP_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define PLOOP_SECTOR_SIZE 512u
#define PLOOP_SIG_LEN 16
#define PLOOP_SIG_V1 "WithoutFreeSpace"
#define PLOOP_SIG_V2 "WithouFreSpacExt"

#define PLOOP_IMAGE_TYPE 2u			/* m_Type: PRL_IMAGE_COMPRESSED */
#define PLOOP_DISK_IN_USE 0x746F6E59u		/* m_DiskInUse: "Ynot", open or dirty */
#define PLOOP_DISK_CLOSED_V21 0x312e3276u	/* m_DiskInUse: closed, format extension valid */
#define PLOOP_FLAG_EMPTY 0x1u			/* m_Flags CIF_Empty: nothing written yet */
#define PLOOP_FLAG_FMT_CONVERT 0x2u		/* CIF_FmtVersionConvert: v1<->v2 running */

#define PLOOP_MAP_OFFSET 16u			/* header size in BAT slots */
#define PLOOP_MIN_CLUSTER_SECTORS 64u		/* 32 KiB */
#define PLOOP_MAX_CLUSTER_SECTORS 131072u	/* 64 MiB */
#define PLOOP_DEF_CLUSTER_SECTORS 2048u		/* 1 MiB */
#define PLOOP_MAX_CHAIN 128			/* images in one chain */

/* The 64-byte header at offset 0 of every delta; little-endian on disk. */
#ifndef __KERNEL__
#pragma pack(push, 1)
#endif
struct ploop_pvd_header {
	ploop_u8 m_Sig[PLOOP_SIG_LEN];
	ploop_u32 m_Type;
	ploop_u32 m_Heads;
	ploop_u32 m_Cylinders;
	ploop_u32 m_Sectors;		/* cluster size in sectors */
	ploop_u32 m_Size;		/* BAT entries (virtual clusters) */
	ploop_u64 m_SizeInSectors;	/* v2: u64 size; v1: low u32 only */
	ploop_u32 m_DiskInUse;
	ploop_u32 m_FirstBlockOffset;	/* sectors from file start to the first data cluster */
	ploop_u32 m_Flags;
	ploop_u64 m_FormatExtensionOffset; /* sectors; 0 = none */
} PLOOP_PACKED;
#ifndef __KERNEL__
#pragma pack(pop)
#endif

PLOOP_STATIC_ASSERT(sizeof(struct ploop_pvd_header) == 64, "ploop header must be 64 bytes");

/* A BAT entry of 0 is a hole; 0xffffffff must never appear on disk. */
#define PLOOP_BAT_HOLE 0u
#define PLOOP_BAT_INVALID 0xffffffffu

/*
 * Size of the header + BAT area in clusters for a disk of @bat_entries
 * clusters of @cluster_bytes: ceil((16 + entries) * 4 / cluster_bytes).
 * Callers ensure no overflow (entries < 2^32).
 */
static inline ploop_u64 ploop_bat_clusters(ploop_u64 bat_entries,
					   ploop_u64 cluster_bytes)
{
	return ((PLOOP_MAP_OFFSET + bat_entries) * 4 + cluster_bytes - 1) / cluster_bytes;
}

#endif
