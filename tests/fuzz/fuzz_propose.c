/*
 * fuzz_propose — a proposer's reply (llm, command) through
 * propose_parse_reply: a JSON object anywhere, a ```lua fence, or neither;
 * then the proposed name as the archive sanitises it.
 *
 * Bar: no crash, no sanitizer report, nothing left after proposal_free;
 * a reply without code says why; the sanitised name matches
 * ^[a-z0-9_]+$ (it becomes a directory name). (Making the fields UTF-8 safe for the
 * archive is proposer_propose's step after parsing, not the parser's.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discover/archive.h"
#include "discover/propose.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *reply = fuzz_cstring(data, size);
    Proposal p;
    memset(&p, 0, sizeof p);
    propose_parse_reply(reply, &p);
    if (!p.code && !p.error[0])
        fuzz_fail("no code and no reason");
    char name[ARCHIVE_NAME_LEN];
    archive_sanitize_name(p.name, name);
    if (!name[0] || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(name))
        fuzz_fail("'%s' sanitised is '%s'", p.name, name);
    proposal_free(&p);
    free(reply);
    return 0;
}
