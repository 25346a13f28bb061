"""CPU-time costs of kernel work, in nanoseconds.

The real kernel spends CPU time scanning LRU lists, migrating pages and unmapping
memory; that time is what lets other CPUs run while one CPU loops in the slow path.
The model charges these costs to the running task (``Sched.run``), so every retry
loop advances virtual time.  Values are order-of-magnitude figures for a modern x86
core, kept in one place so they can be tuned.
"""

FAULT_NS_PER_PAGE = 600        # fault in + zero a 4 KiB page
ACCESS_NS_PER_PAGE = 400       # touch a resident 4 KiB page again (memory bandwidth)
SCAN_NS_PER_PAGE = 150         # look at one LRU page in shrink_page_list
RECLAIM_BASE_NS = 20_000       # one call of try_to_free_pages / balance_pgdat round
COMPACT_BASE_NS = 30_000       # one try_to_compact_pages pass
MIGRATE_NS_PER_PAGE = 1_000    # migrate one page during compaction
ZAP_NS_PER_PAGE = 250          # unmap + free one page (exit_mmap, the oom_reaper)
ZAP_BATCH = 2048               # pages freed between two scheduling points while zapping
FORK_NS = 40_000               # copy_process + dup_mmap of a small process (clone of a thread: less)
SLOWPATH_ROUND_NS = 5_000      # bookkeeping of one slow-path retry round
OOM_SCAN_NS_PER_TASK = 300     # select_bad_process: one oom_evaluate_task call
PRINTK_NS_PER_LINE = 50_000    # one line of the OOM report to a fast console (printk is
                               # synchronous in 5.10; a 115200-baud serial console needs ~6 ms)
OOM_REPORT_LINES = 60          # dump_header besides the task list: dump_stack, show_mem, summary
SWAPPINESS = 60                # vm.swappiness
