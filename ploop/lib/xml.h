/* The libxml2 calls the descriptor code makes, resolved at first use (xml.c). */
#ifndef PLOOP_XML_H
#define PLOOP_XML_H

#include <libxml/parser.h>
#include <libxml/tree.h>

struct ploop_error;

struct xml_api {
	xmlDocPtr (*ReadMemory)(const char *buf, int size, const char *url, const char *enc, int options);
	void (*FreeDoc)(xmlDocPtr doc);
	xmlNodePtr (*DocGetRootElement)(const xmlDoc *doc);
	xmlChar *(*NodeGetContent)(const xmlNode *cur);
	const xmlError *(*GetLastError)(void);
	void (*SetGenericErrorFunc)(void *ctx, xmlGenericErrorFunc handler);
	xmlDocPtr (*NewDoc)(const xmlChar *version);
	xmlNodePtr (*NewNode)(xmlNsPtr ns, const xmlChar *name);
	xmlNodePtr (*DocSetRootElement)(xmlDocPtr doc, xmlNodePtr root);
	xmlNodePtr (*NewChild)(xmlNodePtr parent, xmlNsPtr ns, const xmlChar *name, const xmlChar *content);
	xmlNodePtr (*NewTextChild)(xmlNodePtr parent, xmlNsPtr ns, const xmlChar *name, const xmlChar *content);
	void (*DocDumpFormatMemory)(xmlDocPtr cur, xmlChar **mem, int *size, int format);
	void (*Free)(void *mem);
};

/* NULL (with @err filled) when libxml2 cannot be loaded. */
const struct xml_api *ploop_xml(struct ploop_error *err);

#endif
