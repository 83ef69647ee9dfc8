/* placeholder until the network ops land (owner: ops_nn helper) */
#include "ops_internal.h"
