/* stigmer: one binary for the whole local stack. See cmd/applets.c. */
#include "applets.h"

int main(int argc, char **argv) { return stg_dispatch(argc, argv); }
