/* libxml2, loaded the first time a descriptor is parsed or written: commands that only touch delta
 * files (and the mount server's data path) start without mapping libxml2 and the ICU data it pulls
 * in, which is most of a cold start (see BENCHMARKS.md). */
#include <dlfcn.h>
#include <pthread.h>

#include "internal.h"
#include "xml.h"

static struct xml_api api;
static bool loaded;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#define SYM(field, name)                                         \
	do {                                                     \
		*(void **)&api.field = dlsym(h, name);           \
		if (!api.field)                                  \
			return;                                  \
	} while (0)

static void load(void)
{
	void *h = dlopen("libxml2.so.2", RTLD_NOW | RTLD_LOCAL);
	xmlFreeFunc *free_var;

	if (!h)
		return;
	SYM(ReadMemory, "xmlReadMemory");
	SYM(FreeDoc, "xmlFreeDoc");
	SYM(DocGetRootElement, "xmlDocGetRootElement");
	SYM(NodeGetContent, "xmlNodeGetContent");
	SYM(GetLastError, "xmlGetLastError");
	SYM(SetGenericErrorFunc, "xmlSetGenericErrorFunc");
	SYM(NewDoc, "xmlNewDoc");
	SYM(NewNode, "xmlNewNode");
	SYM(DocSetRootElement, "xmlDocSetRootElement");
	SYM(NewChild, "xmlNewChild");
	SYM(NewTextChild, "xmlNewTextChild");
	SYM(DocDumpFormatMemory, "xmlDocDumpFormatMemory");
	free_var = dlsym(h, "xmlFree");	/* a variable holding the deallocator */
	if (!free_var || !*free_var)
		return;
	api.Free = *free_var;
	loaded = true;
}

const struct xml_api *ploop_xml(struct ploop_error *err)
{
	pthread_once(&once, load);
	if (!loaded) {
		ploop_fail(err, PLOOP_ERR_SYS, 0, "cannot load libxml2 (libxml2.so.2): %s",
			   dlerror() ? dlerror() : "missing symbols");
		return NULL;
	}
	return &api;
}
