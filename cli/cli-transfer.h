/* hutch image import FILE NAME / export NAME FILE: copies through the NBD server. */
#ifndef HUTCH_CLI_TRANSFER_H
#define HUTCH_CLI_TRANSFER_H

int cmd_image_import(int argc, char **argv);
int cmd_image_export(int argc, char **argv);

#endif
