/* store-pack.c: being written */
